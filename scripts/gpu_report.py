#!/usr/bin/env python
"""Measure FlexBERT on this machine's GPU and write docs/benchmarks-gpu.md (``make gpu-report``).

    python scripts/gpu_report.py [--out docs/benchmarks-gpu.md] [--work runs/gpu-report] [--budget 480]
    python scripts/gpu_report.py --dry-run          # print each step's command, run nothing
    python scripts/gpu_report.py --device cpu --smoke --tokenizer DIR --out /tmp/r.md   # seconds, on CPU
                                                    # (a test of the harness: it measures nothing worth recording)

Steps and what is measured: scripts/gpu_harness.py.  Without CUDA (and without
``--device cpu``) it stops at once with one line.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import gpu_harness as G  # noqa: E402 (same folder)
from gpu_env import env_info  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks-gpu.md"))
    p.add_argument("--work", default=os.path.join(REPO, "runs", "gpu-report"))
    p.add_argument("--budget", "--budget-s", dest="budget", type=float, default=480.0, metavar="SECONDS",
                   help="time for all steps (default 480: a 15-minute lease less start-up and transfers); each step's "
                        "limit is what is left, and a step that no longer fits is reported as not run")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per training run")
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    p.add_argument("--smoke", action="store_true", help="the tiny plan (with --device cpu: a test of this tool)")
    p.add_argument("--tokenizer", default=None, help="use this tokenizer folder instead of building the 50,368-token one")
    p.add_argument("--wheelhouse", default=os.path.join(REPO, "wheelhouse"))
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    tiktoken = os.path.join(a.wheelhouse, "gpt2.tiktoken")
    o = G.Options(work=a.work, device=a.device, smoke=a.smoke, steps=a.steps if not a.smoke else 3, tokenizer=a.tokenizer,
                  tiktoken=tiktoken if os.path.isfile(tiktoken) else None, wheelhouse=a.wheelhouse, repo=REPO)
    steps = G.plan(o)
    if a.dry_run:
        for s in steps:
            print(f"# {s.name} (timeout {s.timeout_s}s)\n{s.cmd}")
        return 0
    if a.device == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("gpu-report: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with one", file=sys.stderr)
            return 2
    command = "make gpu-report" if not a.smoke else "python scripts/gpu_report.py --smoke"

    def report(done: list) -> None:  # after every step: versions of what the steps installed, figures so far
        G.write_report(a.out, G.render(done, env_info(), command))

    G.run_steps(steps, a.budget, os.path.join(a.work, "logs"), after_step=report)
    report(steps)
    failed = [s.name for s in steps if s.status != "ok"]
    print(f"wrote {a.out}; {len(steps) - len(failed)} of {len(steps)} steps ok" + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
