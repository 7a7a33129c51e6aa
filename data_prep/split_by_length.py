#!/usr/bin/env python
"""Split a shard folder by document length into one shard folder per range (flexbert/data/length_buckets.py).

    python data_prep/split_by_length.py data/pretrain-8192 --bounds 1024 4096 --out data/pretrain-8192-by-length

writes data/pretrain-8192-by-length/{len-0-1023, len-1024-4095, len-4096-max}, each a shard folder
(train/validation, tokenizer, stats.json) to name as a data.streams source with its own proportion.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a shard folder (tokenize_to_mds.py --out)")
    p.add_argument("--bounds", nargs="+", type=int, required=True, help="increasing token counts where a range ends")
    p.add_argument("--out", required=True, help="output folder (one shard folder per range inside)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    a = p.parse_args(argv)
    from flexbert.data.length_buckets import split_by_length

    try:
        stats = split_by_length(a.src, a.out, a.bounds, a.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, s in stats.items():
        print(f"{os.path.join(a.out, name)}: {s['documents_written']:,} samples, {s['tokens_written']:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
