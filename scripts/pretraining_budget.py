#!/usr/bin/env python
"""``flexbert budget`` (flexbert/cli/budget.py); this file keeps ``python scripts/pretraining_budget.py`` working."""

import sys

from flexbert.cli.budget import main

if __name__ == "__main__":
    sys.exit(main())
