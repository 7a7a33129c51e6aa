"""Shared helpers for the data-pipeline tests (imported as ``data_fixtures.helpers``).

A small byte-level BPE is trained once per test session on generated English-like text (well
under a second), so the tests need neither network nor the demo corpus.
"""

from __future__ import annotations

import os
import random

import numpy as np

WORDS = (
    "the a of and to in is was for on that with as by at from his her their it an be this which "
    "or are were had not but have has one all new more first two after who other also its over time "
    "people year city state world music film river king war church school house team game party "
    "village north south river played became during between history known early public family"
).split()

_CACHE: dict = {}


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(3, 30)
        s = " ".join(rng.choice(WORDS) for _ in range(k))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", ", then more."]))
    return out


def small_tokenizer_dir(factory) -> str:
    """A 512-token BPE with BERT specials, saved once per session (``tmp_path_factory``)."""
    if "tok" not in _CACHE:
        from flexbert.data.tokenizer import save_tokenizer, train_bpe

        d = str(factory.mktemp("tok512"))
        texts = sentences(3000) + ["Ünïcödé façade — naïve café 😀 漢字 ∑x²", "tabs\tand  double  spaces"] * 20
        save_tokenizer(train_bpe(texts, vocab_size=512, min_frequency=2), d)
        _CACHE["tok"] = d
    return _CACHE["tok"]


def write_doc_shards(root: str, docs: list[np.ndarray], split: str = "train", size_limit: int = 1 << 14) -> None:
    """MDS shards with the exact documents given (small shards so that several exist)."""
    from streaming import MDSWriter

    with MDSWriter(out=os.path.join(root, split), columns={"input_ids": "ndarray:uint16", "length": "uint32"},
                   size_limit=size_limit) as w:
        for d in docs:
            w.write({"input_ids": np.asarray(d, dtype=np.uint16), "length": len(d)})


def synthetic_docs(n: int, special, lo: int, hi: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` documents [CLS] body [SEP], lengths uniform in [lo, hi], bodies of non-special ids."""
    rng = np.random.default_rng(seed)
    pool = special.replacement_ids()
    docs = []
    for _ in range(n):
        body = rng.choice(pool, size=int(rng.integers(lo, hi + 1)) - 2)
        docs.append(np.concatenate(([special.cls_id], body, [special.sep_id])).astype(np.int64))
    return docs


def original_ids(row) -> np.ndarray:
    """Undo the masking of a row: labels hold the original id wherever a token was selected."""
    ids = row["input_ids"].numpy().copy()
    lab = row["labels"].numpy()
    ids[lab != -100] = lab[lab != -100]
    return ids


def clean_shm() -> None:
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()


def download_cache() -> str:
    """Where tests keep what they fetch from PyPI: $FLEXBERT_CACHE, else ~/.cache/flexbert (never
    inside the repository: a test must not write into the checkout)."""
    return os.environ.get("FLEXBERT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flexbert")


# what pip says when it cannot reach the index at all (no network, no DNS, a dead proxy)
NETWORK_FAILURES = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                    "Name or service not known", "Network is unreachable", "No route to host", "ConnectTimeoutError",
                    "ReadTimeoutError", "ProxyError", "Max retries exceeded", "Connection refused")


def fetched(fn, *args):
    """``fn(*args)`` (a download through fetch_demo_corpus), skipping the test with the reason only
    when the network is missing (no connection, PyPI unreachable).  A download that fails with the
    network there -- a pinned version or file name that does not exist -- fails the test loudly
    with pip's own error, as does any other error."""
    import subprocess

    import pytest

    try:
        return fn(*args)
    except (ConnectionError, TimeoutError) as e:
        pytest.skip(f"cannot download from PyPI here (offline?): {e}")
    except subprocess.CalledProcessError as e:
        said = f"{e.stderr or ''}\n{e.stdout or ''}"
        errors = [line for line in said.splitlines() if line.startswith("ERROR")] or said.strip().splitlines()[-1:]
        if any(m in said for m in NETWORK_FAILURES):
            pytest.skip(f"cannot download from PyPI here (offline?): {' '.join(errors)[:300]}")
        pytest.fail(f"pip reached the index but could not fetch a pinned fixture (a wrong pin?): {' | '.join(errors)}",
                    pytrace=False)
