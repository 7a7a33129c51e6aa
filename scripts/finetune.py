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
    p.add_argument("--model", required=True, help="run folder, checkpoint, or Hugging Face folder")
    p.add_argument("--train", required=True)
    p.add_argument("--validation", required=True)
    p.add_argument("--test")
    p.add_argument("--text-columns", nargs="+", default=["sentence"], metavar="COL", help="one or two text columns")
    p.add_argument("--label-column", default="label")
    p.add_argument("--task", choices=("classification", "regression"), default="classification")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup as a fraction of training (linear decay after)")
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--patience", type=int, default=2, help="epochs without improvement before stopping (0: never)")
    p.add_argument("--metric", help="early-stopping metric (default: accuracy, or pearson for regression)")
    p.add_argument("--pooling", choices=("cls", "mean"))
    p.add_argument("--dropout", type=float, help="classifier dropout")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    p.add_argument("--random-init", action="store_true", help="same architecture, fresh weights (a baseline)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--log-interval", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    from flexbert.train.cli import _quiet_third_party

    _quiet_third_party()
    from flexbert.config import ConfigError
    from flexbert.convert.hf import ConversionError
    from flexbert.eval.finetune import FinetuneConfig, run_finetune
    from flexbert.train.pretrained import ModelLoadError
    from flexbert.eval.tasks import TaskFileError

    cfg = FinetuneConfig(**vars(a))
    try:
        result = run_finetune(cfg)
    except (TaskFileError, ModelLoadError, ConversionError, ConfigError, FileNotFoundError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    for split in ("validation", "test"):
        if split in result:
            print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in result[split].items()))
    print(f"best epoch {result['best_epoch']} of {result['epochs_run']}; {result['seconds']:.0f}s; "
          f"metrics: {os.path.join(a.out, 'metrics.json')}; model: {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
