"""The contrastive stage: fine-tune an encoder for retrieval on (query, positive[, negative]) rows
with in-batch negatives, on one process or many (flexbert/eval/retrieval_finetune.py).

    flexbert finetune-retrieval --model runs/tiny/hf --train pairs.jsonl --out runs/tiny-retriever
    flexbert finetune-retrieval --config retriever.yaml --lr 5e-5       # options from a file, flags over it
    flexbert finetune-retrieval --model runs/tiny --train msmarco.jsonl nq.jsonl --mix round_robin \\
        --batch-size 4096 --mini-batch-size 64 --query-prompt "query: " --passage-prompt "passage: " \\
        --matryoshka-dims 768 256 64 --eval beir/scifact --out runs/tiny-retriever
    torchrun --nproc-per-node 8 -m flexbert finetune-retrieval ...     # negatives gathered over 8 processes
    flexbert finetune-retrieval --sparse --model runs/tiny/hf ...       # SPLADE on the MLM head

--model: a run folder, a checkpoint, a FlexBERT export or any SentenceTransformer folder.  --train:
one or more tables (.jsonl, .csv, .tsv, .parquet, compressed too) with a query and a positive
column, and a negative column for triplets (flexbert mine-negatives writes it).  --batch-size is
the global batch: the in-batch negatives of every query, split over the processes.  A killed run
continues where its last checkpoint (OUT/work, every --save-steps) left it when rerun as it was.
The output is a SentenceTransformer (or SparseEncoder) folder with result.json: the loss of every
step; with --eval, nDCG@10 / MRR@10 / Recall@100 before and after, and per Matryoshka width.
Before training: blank texts and repeated rows are refused naming file:line (--skip-empty leaves blank
ones out), and pairs the no-duplicates sampler could only batch one at a time (no in-batch negative)
are refused with the count; a loss that stays 0 for the first steps stops the run.
"""

from __future__ import annotations

import argparse
import os

from flexbert.cli.common import command, make_parser, warn
from flexbert.config import at_least
from flexbert.env import dist_env
from flexbert.eval.evaluation import RESULT, run_evaluation

KEYS = ("ndcg@10", "mrr@10", "recall@100")


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert finetune-retrieval")
    p.add_argument("--config", help="YAML of these options (keys as below with _, e.g. batch_size); flags override it")
    p.add_argument("--model", help="run folder, checkpoint, or SentenceTransformer folder")
    p.add_argument("--train", "--pairs", dest="train", nargs="+", help="tables of (query, positive[, negative]) rows")
    p.add_argument("--out", help="output folder (a SentenceTransformer; OUT/work holds checkpoints while it trains)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace a non-empty --out whole, a killed run's checkpoints included")
    p.add_argument("--eval", help="BEIR folder scored before and after training (docs/evaluation.md)")
    p.add_argument("--split", help="the --eval qrels split (default: test)")
    p.add_argument("--skip-empty", action="store_true", default=None,
                   help="leave rows, queries and documents with a blank text out (and say how many) instead of refusing")
    p.add_argument("--epochs", type=at_least(1))
    p.add_argument("--max-steps", type=at_least(1), help="stop after this many steps (before --epochs end)")
    p.add_argument("--batch-size", type=at_least(2), help="rows per step over all processes (the in-batch negatives)")
    p.add_argument("--mini-batch-size", type=at_least(1),
                   help="use the cached loss (GradCache): embed the batch in chunks of this size")
    p.add_argument("--no-gather", dest="gather", action="store_false", default=None,
                   help="on several processes, negatives from this process's slice of the batch only")
    p.add_argument("--mix", choices=("proportional", "round_robin"), help="how batches are drawn from several --train files")
    p.add_argument("--query-prompt", help='text before every query, stored as the model\'s "query" prompt')
    p.add_argument("--passage-prompt", help='text before every passage, stored as its "passage" prompt')
    p.add_argument("--matryoshka-dims", type=at_least(1), nargs="+", metavar="DIM",
                   help="train these nested embedding widths too (MatryoshkaLoss); --eval scores each")
    p.add_argument("--sparse", action="store_true", default=None, help="SPLADE: train and score the MLM head as a SparseEncoder")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=float, help="fraction of the steps with a rising learning rate")
    p.add_argument("--max-seq-len", type=at_least(8))
    p.add_argument("--seed", type=int)
    p.add_argument("--random-init", action="store_true", default=None, help="same architecture, fresh weights (a baseline)")
    p.add_argument("--query-column")
    p.add_argument("--positive-column")
    p.add_argument("--negative-column")
    p.add_argument("--save-steps", type=at_least(1), help="a checkpoint every this many steps (default 500)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.eval.retrieval_finetune import load_retrieval_finetune_config

    cfg = load_retrieval_finetune_config(a.config, {k: v for k, v in vars(a).items() if k != "config"})
    result = run_evaluation("retrieval-finetune", cfg)
    d = result.details
    if dist_env().rank != 0:
        return 0  # the main process reports
    warn(d)
    print(f"{d['steps']} steps; loss {d['losses'][0]:.4f} -> {d['losses'][-1]:.4f}; model: {cfg.out} "
          f"(result: {os.path.join(cfg.out, RESULT)})")
    if result.metrics:
        b, f = d["metrics_before"][cfg.split], result.metrics[cfg.split]
        print(f"{cfg.eval} ({cfg.split}): " + ", ".join(f"{k} {b[k]:.4f} -> {f[k]:.4f}" for k in KEYS))
    for row in d.get("dims", []):
        print(f"  dim {row['dim']:>5d}: " + ", ".join(f"{k} {row[k]:.4f}" for k in KEYS))
    return 0


main = command(parser, run, also=(ValueError, OSError))
