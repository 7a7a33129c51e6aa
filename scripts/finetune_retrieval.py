#!/usr/bin/env python
"""Fine-tune an encoder for retrieval on (query, positive) pairs with in-batch negatives.

    python scripts/finetune_retrieval.py --model runs/tiny/hf --pairs pairs.jsonl --out runs/tiny-retriever
    python scripts/eval_retrieval.py --model runs/tiny-retriever --data beir/scifact

--pairs: any table format of the reader registry (.jsonl, .csv, .tsv, .parquet, compressed too) with
a query and a positive column (--query-column, --positive-column).  The output is a
SentenceTransformer folder.  flexbert/eval/retrieval_finetune.py says what it does and why.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from flexbert.config import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a SentenceTransformer folder (e.g. a FlexBERT export)")
    p.add_argument("--pairs", required=True, help="table of (query, positive) pairs")
    p.add_argument("--out", required=True, help="output folder (a SentenceTransformer)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--epochs", type=at_least(1), default=1)
    p.add_argument("--batch-size", type=at_least(2), default=32, help="pairs per batch (the in-batch negatives)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-seq-len", type=at_least(8))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-column", default="query")
    p.add_argument("--positive-column", default="positive")
    a = p.parse_args(argv)
    if not a.lr > 0:
        p.error(f"--lr must be > 0, got {a.lr}")
    from flexbert.train.cli import _quiet_third_party

    _quiet_third_party()
    from flexbert.eval.retrieval_finetune import finetune_retrieval

    try:
        info = finetune_retrieval(a.model, a.pairs, a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                  max_seq_len=a.max_seq_len, seed=a.seed, overwrite=a.overwrite,
                                  query_column=a.query_column, positive_column=a.positive_column)
    except (ValueError, OSError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{info['steps']} steps; loss {info['losses'][0]:.4f} -> {info['losses'][-1]:.4f}; model: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
