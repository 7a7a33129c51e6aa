"""Hard negatives: add the negative column the contrastive stage reads to a file of (query,
positive) pairs, mined by BM25 or by a dense model (flexbert/eval/hard_negatives.py).

    flexbert mine-negatives --pairs pairs.jsonl --out triplets.jsonl                      # BM25
    flexbert mine-negatives --pairs pairs.jsonl --out triplets.jsonl --miner dense \\
        --model runs/retriever --num-negatives 4 --range-min 2 --relative-margin 0.05 --max-score 0.9
    flexbert finetune-retrieval --model runs/tiny --train triplets.jsonl --out runs/retriever

Candidates are the file's own positives (deduplicated), never a query's own.  --range-min skips the
best candidates (likely unlabelled positives), --relative-margin refuses any scoring within that
fraction of the query's positive (0.05: at most 95% of its score), --max-score (dense: a cosine
ceiling) any above it; the best --num-negatives left become rows (query, positive, negative).  A pair
with none left gets no row: the summary says how many.
"""

from __future__ import annotations

import argparse
import json

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least, from_dict


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert mine-negatives")
    p.add_argument("--pairs", required=True, help="table of (query, positive) rows (.jsonl, .csv, .tsv, .parquet)")
    p.add_argument("--out", required=True, help="the triplets file written (.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--miner", choices=("bm25", "dense"), default="bm25")
    p.add_argument("--model", help="the dense miner: run folder, checkpoint, or model folder")
    p.add_argument("--num-negatives", type=at_least(1), default=1, help="negatives per pair (a row each)")
    p.add_argument("--range-min", type=at_least(0), default=0, help="skip this many of the best candidates")
    p.add_argument("--relative-margin", type=float, help="refuse candidates within this fraction of the positive's score")
    p.add_argument("--max-score", type=float, help="dense: refuse candidates above this cosine similarity")
    p.add_argument("--query-column", default="query")
    p.add_argument("--positive-column", default="positive")
    p.add_argument("--negative-column", default="negative")
    p.add_argument("--query-prompt-name", help="dense: the model's prompt for queries (default: its 'query' one)")
    p.add_argument("--passage-prompt-name", help="dense: its prompt for passages (default: 'document'/'passage')")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--max-seq-len", type=at_least(8))
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.eval.hard_negatives import MineConfig, mine_negatives

    summary = mine_negatives(from_dict(MineConfig, {k: v for k, v in vars(a).items() if v is not None}))
    print(json.dumps(summary))
    return 0


main = command(parser, run, also=(ValueError, OSError))
