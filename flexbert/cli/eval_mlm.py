"""Held-out MLM loss and accuracy at a fixed masking rate and seed (flexbert/eval/mlm.py).

    flexbert eval-mlm --model runs/demo/run --data runs/demo/shards
    flexbert eval-mlm --model runs/demo/hf --data runs/demo/shards --mlm-probability 0.3 --json

--model: a train.py run folder, a checkpoint file, or a Hugging Face ModernBERT folder.  --data: an
MDS shard folder (tokenize_to_mds.py --out); the split defaults to validation.  Defaults match a
training run's own evaluation (15% masking, seed 1234), so the numbers are comparable with its
metrics/eval/MLMLoss.
"""

from __future__ import annotations

import argparse
import json

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.data.masking import OBJECTIVES
from flexbert.eval.evaluation import run_evaluation


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert eval-mlm")
    p.add_argument("--model", required=True, help="run folder, checkpoint, or Hugging Face folder")
    p.add_argument("--data", required=True, help="MDS shard folder")
    p.add_argument("--split", default="validation")
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--seed", type=at_least(0), default=1234, help="mask seed (the training eval's default)")
    p.add_argument("--max-seq-len", type=at_least(8), help="default: the run's, else the shards' (stats.json)")
    p.add_argument("--rows-of", type=at_least(1), help="sequences per packed row (default: the run's, else 8)")
    p.add_argument("--tokenizer", help="default: the copy inside the shard folder")
    p.add_argument("--max-batches", type=at_least(1), help="evaluate only the first N batches")
    p.add_argument("--device", default="cpu")
    p.add_argument("--objective", choices=OBJECTIVES, default="mlm",
                   help="clm: the next-token loss with causal attention (a CLM phase's own evaluation)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--by-length", nargs="*", type=at_least(1), metavar="BOUND",
                   help="also the loss per document-length range, split at these token counts (default 128 512 2048)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.add_argument("--out", help="write OUT/result.json (flexbert/eval/evaluation.py's schema)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.eval.mlm import format_by_length

    options = {k: v for k, v in vars(a).items() if k != "json" and v is not None}
    result = run_evaluation("mlm", options)
    m = result.metrics[a.split]
    if a.json:
        print(json.dumps({**m, **result.details, "model": a.model, "data": a.data, "split": a.split,
                          "mlm_probability": a.mlm_probability, "seed": a.seed}))
        return 0
    what = "next-token (CLM)" if a.objective == "clm" else f"{a.mlm_probability:.0%} masking, seed {a.seed}"
    print(f"{a.model} on {a.data}/{a.split} ({what}): {a.objective.upper()} loss "
          f"{m['loss']:.4f}, accuracy {m['accuracy']:.4f}, perplexity {m['perplexity']:.1f} "
          f"over {result.details['masked_tokens']:,} masked tokens")
    if "by_length" in result.details:
        print(format_by_length(result.details["by_length"]))
    return 0


main = command(parser, run, also=(ValueError,))
