"""Object storage for MDS datasets: reachability checks, uploads and small downloads.

Streaming does the heavy lifting (shard downloads with a bounded cache, shard uploads from
``MDSWriter``); this module covers what sits around it: telling the user in one line that a store
cannot be reached, uploading the files written next to the shards (stats.json, the tokenizer), and
fetching the tokenizer of a remote dataset.  S3-compatible stores honour ``S3_ENDPOINT_URL`` as
Streaming does.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse

from flexbert.errors import FlexBertError


class StoreError(FlexBertError, OSError):
    """An object store cannot be reached or used (one-line message naming the URL)."""


def is_remote(path: str | None) -> bool:
    """True for URLs Streaming treats as remote (s3://, gs://, oci://, hf://, ...), False for folders."""
    return bool(path) and "://" in str(path) and urllib.parse.urlparse(str(path)).scheme not in ("", "file")


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *[p.strip("/") for p in parts if p]])


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _s3_client():
    import boto3
    from botocore.config import Config

    # one attempt and short timeouts: a check should answer in seconds, not after minutes of retries
    cfg = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client("s3", config=cfg, endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)


def list_keys(url: str, limit: int = 1) -> list[str]:
    """Up to ``limit`` object keys under ``url`` (s3 only); raises StoreError when unreachable."""
    obj = urllib.parse.urlparse(url)
    if obj.scheme != "s3":
        return []
    prefix = obj.path.strip("/")
    try:
        resp = _s3_client().list_objects_v2(Bucket=obj.netloc, Prefix=prefix + "/" if prefix else "", MaxKeys=limit)
    except Exception as e:  # noqa: BLE001 -- any failure to talk to the store ends in one line
        raise StoreError(f"{url}: cannot reach the object store ({_store_hint()}): {_one_line(e)}") from None
    return [o["Key"] for o in resp.get("Contents", [])]


def _store_hint() -> str:
    ep = os.environ.get("S3_ENDPOINT_URL")
    return f"S3_ENDPOINT_URL={ep}" if ep else "AWS endpoint; set S3_ENDPOINT_URL for another S3-compatible store"


def check_writable(url: str, overwrite: bool) -> None:
    """Fail early (before any tokenizing) when an s3 store is unreachable or the prefix holds data.
    Other schemes are checked by Streaming's uploader when the first writer opens."""
    if urllib.parse.urlparse(url).scheme == "s3" and list_keys(url) and not overwrite:
        raise StoreError(f"{url}: output prefix is not empty; pass --overwrite to write over it")


def uploader(url: str, local: str):
    """Streaming's uploader from ``local`` to ``url`` (kept local files: ``keep_local=True``)."""
    from streaming.base.storage.upload import CloudUploader  # on use: importing streaming loads its whole package

    try:
        return CloudUploader.get(out=(local, url), keep_local=True, exist_ok=True)
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{url}: cannot reach the object store: {_one_line(e)}") from None


def upload_tree(local: str, url: str, only: list[str] | None = None) -> list[str]:
    """Upload every file under ``local`` (or just the relative paths in ``only``) to ``url``."""
    up = uploader(url, local)
    names = only or sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs)
    for name in names:
        try:
            up.upload_file(name)
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"{join(url, name)}: upload failed: {_one_line(e)}") from None
    return names


def download(url: str, local: str, timeout: float = 60.0) -> None:
    """Fetch one object to ``local`` (parent folders created); raises StoreError naming the URL."""
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    from streaming.base.storage.download import CloudDownloader  # on use: importing streaming loads its whole package

    tmp = f"{local}.part{os.getpid()}"  # ranks may fetch the same file at once: rename into place
    try:
        CloudDownloader.direct_download(url, tmp, timeout)
        os.replace(tmp, local)
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{url}: download failed: {_one_line(e)}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch_tokenizer(remote: str, local: str = "") -> str:
    """The tokenizer written next to remote shards (``<remote>/tokenizer``), downloaded once into
    ``<local>/tokenizer`` (or a temp cache named after the URL); returns the folder."""
    if not local:
        local = os.path.join(tempfile.gettempdir(), "flexbert-cache", hashlib.sha1(remote.encode()).hexdigest()[:16])
    out = os.path.join(local, "tokenizer")
    if not os.path.isfile(os.path.join(out, "tokenizer.json")):
        for name in ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):  # the one that counts last
            try:
                download(join(remote, "tokenizer", name), os.path.join(out, name))
            except StoreError:
                if name == "tokenizer.json":
                    raise
    return out
