"""Tokenizer identity: a fingerprint of what maps text to ids, checked wherever two sides meet.

Two tokenizers of the same size can map text to different ids; a size check cannot see that.  The
fingerprint is a short digest of the tokenizer's model (type, vocabulary, merges, unknown token),
its added and special tokens, normalizer and pre-tokenizer: the same tokenizer saved twice or
loaded through transformers gives the same fingerprint, padding/truncation settings and JSON
formatting do not count.

It travels with shards (``stats.json``; shards written before it fall back to the tokenizer copy
in the shard folder), runs and checkpoints (the run's identity: flexbert/train/run_identity.py)
and exports (the tokenizer files themselves).  ``check_same`` is the check: None on either side
means unknown (old data), which is not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional

from flexbert.data.remote import fetch_tokenizer
from flexbert.errors import FlexBertError

FINGERPRINT_KEY = "tokenizer_fingerprint"  # in a shard folder's stats.json and a run's identity
STATS = "stats.json"


class TokenizerMismatchError(FlexBertError, ValueError):
    """Two sides that must share a tokenizer do not (one line naming both)."""


def _tokenizer_json(x: Any) -> dict:
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{x}: no tokenizer.json")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    backend = getattr(x, "backend_tokenizer", None) or (x if hasattr(x, "to_str") else None)
    if backend is not None:
        return json.loads(backend.to_str())
    if hasattr(x, "get_vocab"):  # a slow transformers tokenizer: its vocabulary is what we have
        return {"model": {"vocab": x.get_vocab()}, "added_tokens": []}
    raise TypeError(f"cannot fingerprint a {type(x).__name__}")


def _merges(merges: Any) -> Optional[list[str]]:
    if merges is None:
        return None
    return [m if isinstance(m, str) else " ".join(m) for m in merges]  # both tokenizers formats


def tokenizer_fingerprint(x: Any) -> str:
    """16 hex digits identifying a tokenizer (a tokenizers.Tokenizer, a transformers tokenizer, a
    tokenizer.json or a folder holding one)."""
    d = _tokenizer_json(x)
    model = d.get("model") or {}
    added = sorted((t.get("id"), t.get("content"), bool(t.get("special"))) for t in d.get("added_tokens") or [])
    canon = {"type": model.get("type"), "vocab": model.get("vocab"), "merges": _merges(model.get("merges")),
             "unk": model.get("unk_token"), "added": added, "normalizer": d.get("normalizer"),
             "pre_tokenizer": d.get("pre_tokenizer")}
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def shards_fingerprint(folder: Optional[str], remote: Optional[str] = None) -> Optional[str]:
    """The fingerprint of the tokenizer a shard folder was written with: stats.json's, else the
    tokenizer copy beside the shards (fetched from ``remote`` when only the store has it); None when
    neither is there (shards from elsewhere still read)."""
    if folder and os.path.isfile(os.path.join(folder, STATS)):
        with open(os.path.join(folder, STATS), encoding="utf-8") as f:
            try:
                recorded = json.load(f).get(FINGERPRINT_KEY)
            except ValueError:
                recorded = None
        if recorded:
            return recorded
    if folder and os.path.isfile(os.path.join(folder, "tokenizer", "tokenizer.json")):
        return tokenizer_fingerprint(os.path.join(folder, "tokenizer"))
    if remote:
        try:
            return tokenizer_fingerprint(fetch_tokenizer(remote, folder or ""))
        except (FileNotFoundError, OSError, ValueError):
            return None
    return None


def shards_digest(folder: Optional[str]) -> Optional[str]:
    """A digest of a local shard folder's contents as Streaming indexes them (every split's
    index.json: shard names, sizes, hashes); None when there is none (an object store only)."""
    if not folder or not os.path.isdir(folder):
        return None
    h = hashlib.sha256()
    found = False
    for split in sorted(os.listdir(folder)):
        index = os.path.join(folder, split, "index.json")
        if os.path.isfile(index):
            found = True
            h.update(split.encode() + b"\0")
            with open(index, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16] if found else None


def check_same(a: Optional[str], a_name: str, b: Optional[str], b_name: str) -> None:
    """Raise when both fingerprints are known and differ."""
    if a and b and a != b:
        raise TokenizerMismatchError(f"tokenizer mismatch: {a_name} uses tokenizer {a}, {b_name} uses {b}: "
                                     "ids would mean other tokens (use the same tokenizer, or re-tokenize)")


def common_fingerprint(named: Mapping[str, Optional[str]]) -> Optional[str]:
    """The one fingerprint of several sides (e.g. a mixture's streams); raises on two that differ."""
    first: Optional[tuple[str, str]] = None
    for name, fp in named.items():
        if not fp:
            continue
        if first is None:
            first = (name, fp)
        else:
            check_same(first[1], first[0], fp, name)
    return first[1] if first else None
