"""Write MDS shards of synthetic documents with the ModernBERT paper's length distributions
(flexbert/data/synthetic.py: the distributions and the layout).

    flexbert synthetic-shards --tokenizer DIR --out DIR --lengths pretrain \\
        --max-seq-len 1024 [--tokens 20M | --documents N] [--seed 0] [--val-fraction 0.01]
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.config import count, finite
from flexbert.data.synthetic import LENGTHS, write_synthetic


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert synthetic-shards")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="folder with tokenizer.json (BERT special tokens)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--lengths", default="pretrain", choices=LENGTHS)
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--documents", type=count, default=0, help="number of documents")
    p.add_argument("--tokens", type=count, default=0, help="or: stop after this many tokens, e.g. 20M")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=finite(0, 1, hi_open=True), default=0.01)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (its contents are deleted)")
    return p


def run(a: argparse.Namespace) -> int:
    s = write_synthetic(a.tokenizer, a.out, a.lengths, a.max_seq_len, a.documents, a.tokens, a.seed,
                        a.val_fraction, a.overwrite)
    print(f"{a.out}: {s['documents_written']} documents, {s['samples_written']} samples, {s['tokens_written']} tokens; "
          f"document length median {s['synthetic']['document_length_median']:.0f}")
    return 0


main = command(parser, run)
