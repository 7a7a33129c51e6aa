#!/usr/bin/env python
"""``flexbert bench-pretraining`` (flexbert/cli/bench_pretraining.py); this file keeps ``python scripts/bench_pretraining.py`` working."""

import sys

from flexbert.cli.bench_pretraining import main

if __name__ == "__main__":
    sys.exit(main())
