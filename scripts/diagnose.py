#!/usr/bin/env python
"""Why is a run slow? Where its time went and the knob to turn (flexbert/train/doctor.py).

    python scripts/diagnose.py runs/base

Reads the run's metrics.jsonl (the timing/ keys every record carries) and config.yaml.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a train.py run folder")
    a = p.parse_args(argv)
    from flexbert.train.doctor import diagnose, settings_of
    from flexbert.train.run_folder import RunFolder, RunFolderError

    run = RunFolder(a.run_dir)
    try:
        cfg = run.load_config()
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.run_dir}: {diagnose(run.metrics(), settings_of(cfg))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
