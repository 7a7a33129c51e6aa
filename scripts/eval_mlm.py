#!/usr/bin/env python
"""Held-out MLM loss and accuracy at a fixed masking rate and seed (flexbert/eval/mlm.py).

    python scripts/eval_mlm.py --model runs/demo/run --data runs/demo/shards
    python scripts/eval_mlm.py --model runs/demo/hf --data runs/demo/shards --mlm-probability 0.3 --json

--model: a train.py run folder, a checkpoint file, or a Hugging Face ModernBERT folder.  --data: an
MDS shard folder (tokenize_to_mds.py --out); the split defaults to validation.  Defaults match a
training run's own evaluation (15% masking, seed 1234), so the numbers are comparable with its
metrics/eval/MLMLoss.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from flexbert.config import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    a = p.parse_args(argv)
    from flexbert.train.cli import _quiet_third_party

    _quiet_third_party()
    from flexbert.config import ConfigError
    from flexbert.train.pretrained import ModelLoadError, load_pretrained, mlm_model
    from flexbert.eval.mlm import check_model_tokenizer, data_config, evaluate_by_length, evaluate_mlm
    from flexbert.train.mlm_eval import DEFAULT_LENGTH_BOUNDS, format_by_length

    try:
        if not os.path.isdir(os.path.join(a.data, a.split)):
            raise ModelLoadError(f"--data {a.data}: no '{a.split}' split folder (MDS shards from tokenize_to_mds.py)")
        pre = load_pretrained(a.model)
        cfg = data_config(a.data, a.split, a.mlm_probability, a.seed, a.max_seq_len, a.rows_of, a.tokenizer, pre.data)
        check_model_tokenizer(pre, cfg, f"shards {a.data}")
        model = mlm_model(pre)
        result = evaluate_mlm(model, cfg, a.max_batches, a.device)
        if a.by_length is not None:
            bounds = sorted(set(a.by_length)) or list(DEFAULT_LENGTH_BOUNDS)
            result["by_length"] = evaluate_by_length(model, cfg, bounds, a.max_batches, a.device)
    except (ModelLoadError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    result.update(model=a.model, data=a.data, split=a.split, mlm_probability=a.mlm_probability, seed=a.seed)
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{a.model} on {a.data}/{a.split} ({a.mlm_probability:.0%} masking, seed {a.seed}): MLM loss "
              f"{result['loss']:.4f}, accuracy {result['accuracy']:.4f}, perplexity {result['perplexity']:.1f} "
              f"over {result['masked_tokens']:,} masked tokens")
        if "by_length" in result:
            print(format_by_length(result["by_length"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
