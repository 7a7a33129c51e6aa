#!/usr/bin/env python
"""Fine-tune a pretrained FlexBERT / ModernBERT on a GLUE-style task (flexbert/eval/finetune.py).

    python scripts/finetune.py --model runs/demo/run \\
        --train rt/train.jsonl --validation rt/validation.jsonl --test rt/test.jsonl \\
        --text-columns text --label-column label --out runs/demo/finetune-rt
    python scripts/finetune.py --model hf/modernbert-base --train MRPC/train.tsv --validation MRPC/dev.tsv \\
        --text-columns "#1 String" "#2 String" --label-column Quality --lr 8e-5 --epochs 2 --out runs/mrpc

--model: a train.py run folder, a checkpoint file, or a Hugging Face ModernBERT folder.  Files: .tsv
(GLUE layout, header row), .csv or .jsonl (optionally .gz).  Writes OUT/metrics.json (validation and
test metrics by name), OUT/metrics.jsonl (per step), OUT/hf (transformers'
ModernBertForSequenceClassification, label names kept).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return p.parse_args(argv)


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Each option's help names its default (FinetuneConfig's: the one source of defaults)."""
    import dataclasses

    from flexbert.eval.finetune import FinetuneConfig

    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig) if f.default is not dataclasses.MISSING}
    defaults["text_columns"] = ["sentence"]
    for action in p._actions:
        value = defaults.get(action.dest)
        if value not in (None, ""):
            action.help = f"{action.help or ''} (default: {value})".strip()


def main(argv=None) -> int:
    a = parse(argv)
    from flexbert.train.cli import _quiet_third_party

    _quiet_third_party()
    from flexbert.config import ConfigError
    from flexbert.convert.hf import ConversionError
    from flexbert.eval.finetune import load_finetune_config, run_finetune
    from flexbert.eval.tasks import TaskFileError
    from flexbert.train.pretrained import ModelLoadError

    given = {k: v for k, v in vars(a).items() if k != "config"}
    try:
        cfg = load_finetune_config(a.config, given)
        result = run_finetune(cfg)
    except (TaskFileError, ModelLoadError, ConversionError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    for split in ("validation", "test"):
        if split in result:
            print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in result[split].items()))
    print(f"best epoch {result['best_epoch']} of {result['epochs_run']}; {result['seconds']:.0f}s; "
          f"metrics: {os.path.join(cfg.out, 'metrics.json')}; model: {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
