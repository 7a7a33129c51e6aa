"""Run training phases in order, each starting from the previous phase's final checkpoint.

    flexbert phases configs/tiny.yaml configs/tiny-context-extension.yaml configs/tiny-decay.yaml
    flexbert phases configs/base.yaml configs/base-context-extension.yaml configs/base-decay.yaml \\
        --runs-root runs/base-chain 1:data.local=data/pretrain-1024

Overrides: ``key=value`` for every phase, ``N:key=value`` for phase N only.  Finished phases
(``{run_dir}/phase_done.json``) are skipped, so a rerun does no work; an interrupted phase resumes.
``--niah`` adds a needle-in-a-haystack table (``{run_dir}/niah/result.json``, ``niah.png``) per phase.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert phases")
    p.add_argument("args", nargs="+", help="phase configs (.yaml) in order, then key=value / N:key=value overrides")
    p.add_argument("--runs-root", help="put each phase's run folder at RUNS_ROOT/{run_name}")
    p.add_argument("--niah", action="store_true",
                   help="after each phase, the needle-in-a-haystack table and heatmap in {run_dir}/niah (flexbert eval-niah)")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.experiments.phases import run_chain

    configs = [x for x in a.args if x.endswith((".yaml", ".yml")) and "=" not in x]
    overrides = [x for x in a.args if x not in configs]
    finals = run_chain(configs, overrides, a.runs_root, niah=a.niah)
    print(f"[phases] done; final checkpoint: {finals[-1]}")
    return 0


main = command(parser, run, also=(RuntimeError, OSError), intermixed=True)
