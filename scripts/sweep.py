#!/usr/bin/env python
"""``flexbert sweep`` (flexbert/cli/sweep.py); this file keeps ``python scripts/sweep.py`` working."""

import sys

from flexbert.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
