#!/usr/bin/env python
"""Run training phases in order, each starting from the previous phase's final checkpoint.

    python scripts/run_phases.py configs/tiny.yaml configs/tiny-context-extension.yaml configs/tiny-decay.yaml
    python scripts/run_phases.py configs/base.yaml configs/base-context-extension.yaml configs/base-decay.yaml \
        --runs-root runs/base-chain 1:data.local=data/pretrain-1024

Overrides: ``key=value`` for every phase, ``N:key=value`` for phase N only.  Finished phases
(``{run_dir}/phase_done.json``) are skipped, so a rerun does no work; an interrupted phase resumes.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="+", help="phase configs (.yaml) in order, then key=value / N:key=value overrides")
    p.add_argument("--runs-root", help="put each phase's run folder at RUNS_ROOT/{run_name}")
    a = p.parse_intermixed_args(argv)
    configs = [x for x in a.args if x.endswith((".yaml", ".yml")) and "=" not in x]
    overrides = [x for x in a.args if x not in configs]
    from flexbert.config import ConfigError
    from flexbert.train.phases import run_chain

    try:
        finals = run_chain(configs, overrides, a.runs_root)
    except (ConfigError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[phases] done; final checkpoint: {finals[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
