"""Tokenize text files into MDS shards for FlexBERT pretraining.

    flexbert tokenize --input PATH [PATH ...] --tokenizer DIR --out DIR         --max-seq-len N [--workers N] [--overwrite]

Inputs: .txt (a document per line, or per blank-line paragraph with --txt-mode paragraph),
.jsonl (--field, default "text"), .parquet (needs pyarrow), each optionally .gz/.bz2; a directory
stands for the supported files under it.  Writes OUT/train, OUT/validation (documents chosen by a
hash of their text, --val-fraction, or given explicitly with --val-input), OUT/tokenizer and
OUT/stats.json.  OUT may be an object-store URL (s3://bucket/prefix; S3_ENDPOINT_URL selects an
S3-compatible endpoint): shards are uploaded as they are written.  Bad input exits with status 2
and a one-line message naming file and line (or the URL of a store that cannot be reached).
See docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import os

from flexbert.cli.common import command, make_parser
from flexbert.config import finite
from flexbert.data.shards import ShardOptions, tokenize_to_mds


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert tokenize")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="input files or folders")
    p.add_argument("--val-input", nargs="+", default=[], metavar="PATH", help="files that go to the validation split as a whole")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="folder with tokenizer.json (flexbert train-tokenizer)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder or object-store URL such as s3://bucket/prefix (must be empty unless --overwrite)")
    p.add_argument("--max-seq-len", type=int, required=True, metavar="N", help="longest sample, special tokens included")
    p.add_argument("--workers", type=int, default=default_workers(), metavar="N", help="tokenizer processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--field", default="text", help="JSONL field / parquet column holding the text (default: text)")
    p.add_argument("--txt-mode", choices=["line", "paragraph"], default="line", help=".txt: a document per line or per blank-line paragraph")
    p.add_argument("--val-fraction", type=finite(0, 1, hi_open=True), default=None, help="share of documents hashed into validation (default 0.01, 0 with --val-input)")
    p.add_argument("--truncate", action="store_true", help="keep only the first max-seq-len tokens of long documents instead of chunking them")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help="invalid UTF-8: fail naming file:line, or replace with U+FFFD")
    p.add_argument("--shard-size", default="64mb", help="MDS shard size limit (default 64mb)")
    p.add_argument("--compression", default=None, help="MDS shard compression, e.g. zstd (default none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(a: argparse.Namespace) -> int:
    val_fraction = a.val_fraction if a.val_fraction is not None else (0.0 if a.val_input else 0.01)
    opts = ShardOptions(
        max_seq_len=a.max_seq_len,
        val_fraction=val_fraction,
        workers=a.workers,
        overwrite=a.overwrite,
        field=a.field,
        txt_mode=a.txt_mode,
        errors=a.errors,
        truncate=a.truncate,
        size_limit=a.shard_size,
        compression=a.compression,
        progress=not a.no_progress,
    )
    stats = tokenize_to_mds(a.input, a.tokenizer, a.out, opts, val_inputs=a.val_input)
    summary = {k: stats[k] for k in ("documents_read", "documents_written", "documents_skipped", "documents_chunked", "samples_written", "tokens_written", "tokens_per_s")}
    print(json.dumps(summary))
    return 0


main = command(parser, run, also=(ValueError,))
