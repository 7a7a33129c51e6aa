#!/usr/bin/env python
"""Average FlexBERT checkpoints' model weights (fp32) into a new checkpoint.

    python scripts/average_checkpoints.py --out runs/base-decay-avg runs/base-decay/checkpoints/ba{100,200,300}.pt
    python scripts/average_checkpoints.py --out runs/base-decay-avg --run-dir runs/base-decay --best-k 3 --metric MLMLoss

The second form averages the 3 checkpoints with the lowest eval metric in the run's metrics.jsonl
plus the final one.  OUT gets checkpoints/ba{N}.pt and config.yaml, so it works as load_path,
init_from, or with scripts/export_hf.py --run-dir OUT.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from flexbert.config import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", help="checkpoints to average (the last one is the template)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--run-dir", help="pick checkpoints from this run by eval metric (with --best-k)")
    p.add_argument("--best-k", type=at_least(1), default=3, help="the k best checkpoints by --metric, plus the final one")
    p.add_argument("--metric", default="MLMLoss", help="eval metric in metrics.jsonl (metrics/eval/NAME)")
    p.add_argument("--maximize", action="store_true", help="higher metric is better (e.g. MLMAccuracy)")
    a = p.parse_args(argv)
    if bool(a.checkpoints) == bool(a.run_dir):
        p.error("give checkpoints or --run-dir (not both)")
    from flexbert.train.averaging import average_checkpoints, best_checkpoints
    from flexbert.train.export import ExportError

    try:
        paths = a.checkpoints or best_checkpoints(a.run_dir, a.best_k, a.metric, a.maximize)
        out = average_checkpoints(paths, a.out, a.overwrite)
    except (ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"averaged {len(paths)} checkpoint(s): {', '.join(paths)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
