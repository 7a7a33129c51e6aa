"""Average FlexBERT checkpoints' model weights (fp32) into a new checkpoint.

    flexbert average --out runs/base-decay-avg runs/base-decay/checkpoints/ba{100,200,300}.pt
    flexbert average --out runs/base-decay-avg --run-dir runs/base-decay --best-k 3 --metric MLMLoss

The second form averages the 3 checkpoints with the lowest eval metric in the run's metrics.jsonl
plus the final one.  OUT gets checkpoints/ba{N}.pt and config.yaml, so it works as load_path,
init_from, or with flexbert export --run-dir OUT.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert average")
    p.add_argument("checkpoints", nargs="*", help="checkpoints to average (the last one is the template)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    p.add_argument("--run-dir", help="pick checkpoints from this run by eval metric (with --best-k)")
    p.add_argument("--best-k", type=at_least(1), default=3, help="the k best checkpoints by --metric, plus the final one")
    p.add_argument("--metric", default="MLMLoss", help="eval metric in metrics.jsonl (metrics/eval/NAME)")
    p.add_argument("--maximize", action="store_true", help="higher metric is better (e.g. MLMAccuracy)")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.weights.averaging import average_checkpoints, best_checkpoints

    if bool(a.checkpoints) == bool(a.run_dir):
        parser().error("give checkpoints or --run-dir (not both)")
    paths = a.checkpoints or best_checkpoints(a.run_dir, a.best_k, a.metric, a.maximize)
    out = average_checkpoints(paths, a.out, a.overwrite)
    print(f"averaged {len(paths)} checkpoint(s): {', '.join(paths)} -> {out}")
    return 0


main = command(parser, run, also=(ValueError, OSError))
