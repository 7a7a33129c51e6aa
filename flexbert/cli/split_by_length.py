"""Split a shard folder by document length into one shard folder per range (flexbert/data/length_buckets.py).

    flexbert split-by-length data/pretrain-8192 --bounds 1024 4096 --out data/pretrain-8192-by-length

writes data/pretrain-8192-by-length/{len-0-1023, len-1024-4095, len-4096-max}, each a shard folder
(train/validation, tokenizer, stats.json) to name as a data.streams source with its own proportion.
"""

from __future__ import annotations

import argparse
import os

from flexbert.cli.common import command, make_parser
from flexbert.data.length_buckets import split_by_length


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert split-by-length")
    p.add_argument("src", help="a shard folder (flexbert tokenize --out)")
    p.add_argument("--bounds", nargs="+", type=int, required=True, help="increasing token counts where a range ends")
    p.add_argument("--out", required=True, help="output folder (one shard folder per range inside)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    return p


def run(a: argparse.Namespace) -> int:
    stats = split_by_length(a.src, a.out, a.bounds, a.overwrite, a.progress)
    for name, s in stats.items():
        print(f"{os.path.join(a.out, name)}: {s['documents_written']:,} samples, {s['tokens_written']:,} tokens")
    return 0


main = command(parser, run, also=(ValueError,))
