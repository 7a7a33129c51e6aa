"""Shards split by document length, so a phase can sample short, long and very long documents in
chosen proportions (``data_prep/split_by_length.py``; context extension, docs/data.md).

``split_by_length(src, out, bounds=[1024, 4096])`` reads every split of the shard folder ``src``
(MDS samples: one per document chunk, with their ``length``) and writes one shard folder per range
through the shard writer (flexbert/data/shard_writer.py: schema, tokenizer copy, stats.json with
the tokenizer fingerprint): ``out/len-0-1023``, ``out/len-1024-4095``, ``out/len-4096-max``.  Each
folder is a ``data.streams`` source; Streaming's proportions then give each range its share of
the documents exactly, which filtering documents while training could not (a filter throws away
part of what the proportions drew).  A sample longer than ``max_seq_len`` never exists (the
tokenizer chunked it), so a range is a range of chunk lengths: with 8,192-token shards, a
``len-4096-max`` folder holds documents (or chunks) of 4,096 to 8,192 tokens.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

import numpy as np
from streaming import StreamingDataset
from streaming.base.util import clean_stale_shared_memory
from tqdm import tqdm

from flexbert.data.fingerprint import STATS
from flexbert.data.outputs import prepare_output_dir
from flexbert.data.shard_stats import SPLITS
from flexbert.data.shard_writer import ShardWriter
from flexbert.data.tokenizer import load_tokenizer


DEFAULT_LENGTH_BOUNDS = (128, 512, 2048)  # where document-length ranges end, in tokens (evaluations by length)


def bucket_names(bounds: Sequence[int]) -> list[str]:
    edges = [0, *bounds]
    return [f"len-{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"len-{edges[-1]}-max"]


def check_bounds(bounds: Sequence[int]) -> list[int]:
    b = [int(x) for x in bounds]
    if not b or any(x < 1 for x in b) or b != sorted(set(b)):
        raise ValueError(f"--bounds: increasing token counts >= 1, got {list(bounds)}")
    return b


def _read_split(src: str, split: str, progress: bool = False):
    """(input_ids, length) of every sample of one split, in order (None when the split is absent);
    ``progress``: a bar on stderr (samples read of the split's)."""
    if not os.path.isfile(os.path.join(src, split, "index.json")):
        return None
    clean_stale_shared_memory()
    ds = StreamingDataset(local=src, split=split, shuffle=False, batch_size=1)
    for i in tqdm(range(ds.num_samples), desc=f"split-by-length {split}", unit=" docs", disable=not progress,
                  file=sys.stderr, mininterval=0.5):
        s = ds[i]
        yield np.asarray(s["input_ids"]), int(s["length"])


def split_by_length(src: str, out: str, bounds: Sequence[int], overwrite: bool = False,
                    progress: bool = False) -> dict[str, dict]:
    """Write one shard folder per length range under ``out``; returns each folder's stats."""
    bounds = check_bounds(bounds)
    tok_dir = os.path.join(src, "tokenizer")
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        raise FileNotFoundError(f"{src}: no tokenizer/ copy next to the shards (write them with flexbert tokenize)")
    prepare_output_dir(out, overwrite=overwrite, inputs=[src])
    tok = load_tokenizer(tok_dir)
    names = bucket_names(bounds)
    writers = {n: ShardWriter(os.path.join(out, n), tok_dir, tok) for n in names}
    counts = {n: {s: {"documents": 0, "samples": 0, "tokens": 0} for s in SPLITS} for n in names}
    read = {s: 0 for s in SPLITS}
    try:
        for split in SPLITS:
            for ids, n in _read_split(src, split, progress) or ():
                name = names[int(np.searchsorted(bounds, n, side="right"))]
                writers[name].write(split, ids, [n])
                c = counts[name][split]
                c["documents"], c["samples"], c["tokens"] = c["documents"] + 1, c["samples"] + 1, c["tokens"] + n
                read[split] += 1
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return {n: writers[n].finish(_stats(src, counts[n], bounds, n)) for n in names if sum(
        c["documents"] for c in counts[n].values())} or _nothing(src, read)


def _source_max_seq_len(src: str) -> Optional[int]:
    path = os.path.join(src, STATS)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("max_seq_len")


def _stats(src: str, splits: dict, bounds: Sequence[int], name: str) -> dict:
    n = sum(c["documents"] for c in splits.values())
    return {"max_seq_len": _source_max_seq_len(src), "inputs": [{"path": src, "split": "as in the source", "documents": n}], "documents_read": n,
            "documents_written": n, "documents_skipped": {"empty": 0, "no_tokens": 0}, "documents_chunked": 0,
            "documents_truncated": 0, "documents_with_replaced_bytes": 0,
            "samples_written": sum(c["samples"] for c in splits.values()),
            "tokens_written": sum(c["tokens"] for c in splits.values()), "tokens_truncated": 0, "splits": splits,
            "length_range": name, "length_bounds": list(bounds), "source": os.path.abspath(src)}


def _nothing(src: str, read: dict) -> Optional[dict]:
    raise ValueError(f"{src}: no samples in {', '.join(SPLITS)} ({read}); nothing to split")
