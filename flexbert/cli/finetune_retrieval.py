"""Fine-tune an encoder for retrieval on (query, positive[, negative]) rows with in-batch negatives.

    flexbert finetune-retrieval --model runs/tiny/hf --train pairs.jsonl --out runs/tiny-retriever
    flexbert finetune-retrieval --model runs/tiny --train triplets.tsv --eval beir/dev --split dev \\
        --batch-size 512 --mini-batch-size 32 --out runs/tiny-retriever     # cached loss: big batch, small memory

--model: a run folder, a checkpoint, a FlexBERT export or any SentenceTransformer folder.  --train:
any table format of the reader registry (.jsonl, .csv, .tsv, .parquet, compressed too) with a query
and a positive column, and a negative column for triplets (--query-column, --positive-column,
--negative-column).  The output is a SentenceTransformer folder with result.json (the
loss of every step; with --eval, nDCG@10 / MRR@10 / Recall@100 before and after).
Before training: blank texts and repeated rows are refused naming file:line (--skip-empty leaves blank
ones out), and pairs the no-duplicates sampler could only batch one at a time (no in-batch negative)
are refused with the count; a loss that stays 0 for the first steps stops the run.
flexbert/eval/retrieval_finetune.py says what it does and why.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser, warn
from flexbert.config import at_least
from flexbert.eval.evaluation import run_evaluation


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert finetune-retrieval")
    p.add_argument("--model", required=True, help="run folder, checkpoint, or SentenceTransformer folder")
    p.add_argument("--train", "--pairs", dest="train", required=True, help="table of (query, positive[, negative]) rows")
    p.add_argument("--out", required=True, help="output folder (a SentenceTransformer)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--eval", help="BEIR folder scored before and after training (docs/evaluation.md)")
    p.add_argument("--split", default="test", help="the --eval qrels split")
    p.add_argument("--skip-empty", action="store_true",
                   help="leave rows, queries and documents with a blank text out (and say how many) instead of refusing")
    p.add_argument("--epochs", type=at_least(1), default=1)
    p.add_argument("--max-steps", type=at_least(1), help="stop after this many steps (before --epochs end)")
    p.add_argument("--batch-size", type=at_least(2), default=32, help="rows per batch (the in-batch negatives)")
    p.add_argument("--mini-batch-size", type=at_least(1),
                   help="use the cached loss (GradCache): embed the batch in chunks of this size")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with a rising learning rate")
    p.add_argument("--max-seq-len", type=at_least(8))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random-init", action="store_true", help="same architecture, fresh weights (a baseline)")
    p.add_argument("--query-column", default="query")
    p.add_argument("--positive-column", default="positive")
    p.add_argument("--negative-column", default="negative")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(a: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(a).items() if v is not None and k != "no_progress"}
    result = run_evaluation("retrieval-finetune", {**options, "progress": not a.no_progress})
    d = result.details
    warn(d)
    print(f"{d['steps']} steps; loss {d['losses'][0]:.4f} -> {d['losses'][-1]:.4f}; model: {a.out}")
    if result.metrics:
        b, f = d["metrics_before"][a.split], result.metrics[a.split]
        print(f"{a.eval} ({a.split}): " + ", ".join(f"{k} {b[k]:.4f} -> {f[k]:.4f}" for k in ("ndcg@10", "mrr@10", "recall@100")))
    return 0


main = command(parser, run, also=(ValueError, OSError))
