"""Fine-tune a pretrained FlexBERT / ModernBERT on a GLUE-style task (flexbert/eval/finetune.py).

    flexbert finetune --model runs/demo/run \\
        --train rt/train.jsonl --validation rt/validation.jsonl --test rt/test.jsonl \\
        --text-columns text --label-column label --out runs/demo/finetune-rt
    flexbert finetune --model hf/modernbert-base --train MRPC/train.tsv --validation MRPC/dev.tsv \\
        --text-columns "#1 String" "#2 String" --label-column Quality --lr 8e-5 --epochs 2 --out runs/mrpc

--model: a train.py run folder, a checkpoint file, or a Hugging Face ModernBERT folder.  Files: .tsv
(GLUE layout, header row), .csv or .jsonl (optionally .gz).  Writes OUT/result.json (validation and
test metrics by name: flexbert/eval/evaluation.py), OUT/metrics.jsonl (per step), OUT/hf (transformers'
ModernBertForSequenceClassification, label names kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from flexbert.cli.common import command, make_parser
from flexbert.eval.evaluation import RESULT, run_evaluation
from flexbert.eval.finetune import FinetuneConfig, load_finetune_config


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert finetune")
    p.add_argument("--config", help="YAML of these options (keys as below, e.g. text_columns); flags override it")
    p.add_argument("--model", help="run folder, checkpoint, or Hugging Face folder (required here or in --config)")
    p.add_argument("--train", help="training task file (required here or in --config)")
    p.add_argument("--validation", help="validation task file (required here or in --config)")
    p.add_argument("--test")
    p.add_argument("--text-columns", nargs="+", metavar="COL", help="one or two text columns")
    p.add_argument("--label-column")
    p.add_argument("--task", choices=("classification", "regression"))
    p.add_argument("--out", help="output folder (required here or in --config)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup", type=float, help="warmup as a fraction of training (linear decay after)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--max-seq-len", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping (0: never)")
    p.add_argument("--metric", help="early-stopping metric (default: accuracy, or pearson for regression)")
    p.add_argument("--pooling", choices=("cls", "mean"))
    p.add_argument("--dropout", type=float, help="classifier dropout")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    p.add_argument("--random-init", action="store_true", default=None, help="same architecture, fresh weights (a baseline)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"))
    p.add_argument("--log-interval", type=int)
    _show_defaults(p)
    return p


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Each option's help names its default (FinetuneConfig's: the one source of defaults)."""
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig) if f.default is not dataclasses.MISSING}
    defaults["text_columns"] = ["sentence"]
    for action in p._actions:
        value = defaults.get(action.dest)
        if value not in (None, ""):
            action.help = f"{action.help or ''} (default: {value})".strip()


def run(a: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(a).items() if k != "config"}
    cfg = load_finetune_config(a.config, given)
    result = run_evaluation(cfg.task, cfg)
    for split, values in result.metrics.items():
        print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    d = result.details
    print(f"best epoch {d['best_epoch']} of {d['epochs_run']}; {d['seconds']:.0f}s; "
          f"result: {os.path.join(cfg.out, RESULT)}; model: {d['export']}")
    return 0


main = command(parser, run, also=(ValueError,))
