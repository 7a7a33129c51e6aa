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
import os

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.eval.mlm import (DEFAULT_LENGTH_BOUNDS, check_model_tokenizer, data_config, evaluate_mlm,
                               format_by_length, mlm_loader)
from flexbert.weights.load import ModelLoadError, load_pretrained, mlm_model


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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--by-length", nargs="*", type=at_least(1), metavar="BOUND",
                   help="also the loss per document-length range, split at these token counts (default 128 512 2048)")
    return p


def run(a: argparse.Namespace) -> int:
    if not os.path.isdir(os.path.join(a.data, a.split)):
        raise ModelLoadError(f"--data {a.data}: no '{a.split}' split folder (MDS shards from tokenize_to_mds.py)")
    pre = load_pretrained(a.model)
    cfg = data_config(a.data, a.split, a.mlm_probability, a.seed, a.max_seq_len, a.rows_of, a.tokenizer, pre.data)
    check_model_tokenizer(pre, cfg, f"shards {a.data}")
    bounds = (sorted(set(a.by_length)) or list(DEFAULT_LENGTH_BOUNDS)) if a.by_length is not None else None
    result = evaluate_mlm(mlm_model(pre), mlm_loader(cfg), a.max_batches, a.device, bounds=bounds)
    result.update(model=a.model, data=a.data, split=a.split, mlm_probability=a.mlm_probability, seed=a.seed)
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"{a.model} on {a.data}/{a.split} ({a.mlm_probability:.0%} masking, seed {a.seed}): MLM loss "
          f"{result['loss']:.4f}, accuracy {result['accuracy']:.4f}, perplexity {result['perplexity']:.1f} "
          f"over {result['masked_tokens']:,} masked tokens")
    if "by_length" in result:
        print(format_by_length(result["by_length"]))
    return 0


main = command(parser, run, also=(ValueError,))
