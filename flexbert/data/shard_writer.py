"""The one writer of a shard folder: the MDS schema, the id dtype, the tokenizer copy and stats.json.

Layout written under ``out``::

    out/train/index.json + shard.*.mds        one sample per document chunk
    out/validation/index.json + shard.*.mds   (only when the split got documents)
    out/tokenizer/                            copy of the tokenizer used (reproducibility)
    out/stats.json                            counts that add up (flexbert/data/shard_stats.py),
                                              and the tokenizer's fingerprint (flexbert/data/fingerprint.py)

A sample is ``{"input_ids": ndarray uint16|uint32, "length": uint32}``: ids are uint16 when the
vocabulary fits (<= 65,536 ids), else uint32.  ``tokenize_to_mds`` (flexbert/data/shards.py) and
``data_prep/synthetic_shards.py`` both write through ``ShardWriter``, so their folders read the same;
folders written before it carry the same schema and still read.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional, Sequence

import numpy as np
from streaming import MDSWriter

from flexbert.data.fingerprint import FINGERPRINT_KEY, STATS, tokenizer_fingerprint
from flexbert.data.remote import join
from flexbert.data.shard_stats import check_stats
from flexbert.data.tokenizer import SpecialTokens


def id_dtype(vocab_size: int) -> str:
    """The narrowest unsigned dtype that holds every id of the vocabulary."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def columns(dtype: str) -> dict[str, str]:
    """The MDS columns of a shard folder (the loader reads ``input_ids``; ``length`` is its size)."""
    return {"input_ids": f"ndarray:{dtype}", "length": "uint32"}


class ShardWriter:
    """Writes one shard folder.  Splits open when their first sample comes (an empty split is left
    out); ``finish(stats)`` closes them and writes the tokenizer copy and stats.json, in that order
    (stats.json marks a complete folder); leaving a ``with`` block on an error removes the splits
    written so far, so a failed run leaves no half-written dataset."""

    def __init__(self, out: str, tokenizer_dir: str, tok: Any, *, size_limit: str = "64mb",
                 compression: Optional[str] = None, remote: Optional[str] = None):
        self.out, self.tokenizer_dir, self.tok, self.remote = out, tokenizer_dir, tok, remote
        self.size_limit, self.compression = size_limit, compression
        self.special = SpecialTokens.from_tokenizer(tok)
        self.dtype = id_dtype(self.special.vocab_size)
        self._writers: dict = {}

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _writer(self, split: str):
        w = self._writers.get(split)
        if w is None:
            dest: Any = os.path.join(self.out, split)
            if self.remote is not None:
                dest = (dest, join(self.remote, split))  # each shard is uploaded as it is finished
            w = self._writers[split] = MDSWriter(out=dest, columns=columns(self.dtype), size_limit=self.size_limit,
                                                 compression=self.compression)
        return w

    def write(self, split: str, flat: np.ndarray, lengths: Sequence[int]) -> None:
        """Samples of ``lengths`` ids each, laid end to end in ``flat``, into ``split``."""
        w = self._writer(split)
        pos = 0
        for n in lengths:
            w.write({"input_ids": np.asarray(flat[pos: pos + n]).astype(self.dtype, copy=False), "length": int(n)})
            pos += n

    def abort(self) -> None:
        for split in self._writers:
            shutil.rmtree(os.path.join(self.out, split), ignore_errors=True)
        self._writers.clear()

    def finish(self, stats: dict) -> dict:
        """Close the splits, copy the tokenizer, write stats.json (with the schema's dtype, the
        vocabulary, the special ids and the tokenizer fingerprint added); returns the stats."""
        for w in self._writers.values():
            w.finish()
        copy_tokenizer(self.tokenizer_dir, os.path.join(self.out, "tokenizer"))
        sp = self.special
        result = {**stats, "dtype": self.dtype, "vocab_size": sp.vocab_size,
                  "special_ids": {"cls": sp.cls_id, "sep": sp.sep_id, "pad": sp.pad_id, "mask": sp.mask_id},
                  FINGERPRINT_KEY: tokenizer_fingerprint(self.tok)}
        check_stats(result)
        with open(os.path.join(self.out, STATS), "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        return result


def copy_tokenizer(src: str, dst: str) -> None:
    """The tokenizer files of ``src`` (a folder, or a tokenizer.json) into ``dst``."""
    os.makedirs(dst, exist_ok=True)
    if not os.path.isdir(src):
        shutil.copyfile(src, os.path.join(dst, "tokenizer.json"))
        return
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
