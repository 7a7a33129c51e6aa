#!/usr/bin/env python
"""``flexbert average`` (flexbert/cli/average.py); this file keeps ``python scripts/average_checkpoints.py`` working."""

import sys

from flexbert.cli.average import main

if __name__ == "__main__":
    sys.exit(main())
