"""Run a sweep file's variants and report on them (the sweep format: flexbert/experiments/sweep.py).

    flexbert sweep configs/sweeps/tiny-ablation.yaml              # run what is not done, then report
    flexbert sweep configs/sweeps/tiny-ablation.yaml --parallel 2  # two runs at a time
    flexbert sweep configs/sweeps/tiny-ablation.yaml --emit        # print one command per run
    flexbert sweep configs/sweeps/tiny-ablation.yaml --report      # only re-read metrics and redraw
    flexbert sweep configs/sweeps/tiny-ablation.yaml --list        # runs, their overrides and state

Finished runs are skipped; interrupted ones resume from their newest checkpoint.  The report
(results.csv, results.md, loss_curves.png, final_metric.png) lands in the sweep's ``out`` folder.
"""

from __future__ import annotations

import argparse
import time

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.experiments.sweep import SweepError, emit, load_sweep, report, run_all, status, validate


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert sweep")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--parallel", type=at_least(1), default=1, metavar="N", help="runs at a time (default 1)")
    p.add_argument("--emit", action="store_true", help="print one launch command per run and exit")
    p.add_argument("--report", action="store_true", help="only write the report from the runs' metrics")
    p.add_argument("--list", action="store_true", help="list runs, overrides and state, and exit")
    p.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs (names as --list shows)")
    p.add_argument("--metric", help="the report's headline metric (default: eval_loss, or the first validation_ metric)")
    p.add_argument("--out", help="override the sweep file's out folder")
    p.add_argument("--done-only", action="store_true", help="report only finished runs")
    return p


def run(a: argparse.Namespace) -> int:
    sweep = load_sweep(a.sweep)
    if a.out:
        sweep.out = a.out
    unknown = [n for n in (a.only or []) if n not in {r.name for r in sweep.runs}]
    if unknown:
        raise SweepError(f"--only: no run named '{unknown[0]}'; runs: {', '.join(r.name for r in sweep.runs)}")
    if a.emit:
        print("\n".join(emit(sweep)))
        return 0
    if a.list:
        for r in sweep.runs:
            print(f"{r.name:40s} {status(sweep, r):8s} {r.overrides}")
        return 0
    failed = []
    if not a.report:
        validate(sweep)
        t0 = time.time()
        failed = run_all(sweep, a.parallel, a.only)
        print(f"[sweep] {sweep.name}: {len(sweep.runs) - len(failed)}/{len(sweep.runs)} runs ok in {time.time() - t0:.0f}s")
    paths = report(sweep, a.metric, a.done_only)
    with open(paths["results.md"]) as f:
        print(f.read())
    print("report: " + ", ".join(paths.values()))
    return 1 if failed else 0


main = command(parser, run)
