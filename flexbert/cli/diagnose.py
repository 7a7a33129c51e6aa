"""Why is a run slow? Where its time went and the knob to turn (flexbert/train/doctor.py).

    flexbert diagnose runs/base

Reads the run's metrics.jsonl (the timing/ keys every record carries) and config.yaml.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.train.run_folder import RunFolder


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert diagnose")
    p.add_argument("run_dir", help="a train.py run folder")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.train.doctor import diagnose, settings_of

    folder = RunFolder(a.run_dir)
    cfg = folder.load_config()
    print(f"{a.run_dir}: {diagnose(folder.metrics(), settings_of(cfg))}")
    return 0


main = command(parser, run)
