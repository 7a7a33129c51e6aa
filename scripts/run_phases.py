#!/usr/bin/env python
"""``flexbert phases`` (flexbert/cli/phases.py); this file keeps ``python scripts/run_phases.py`` working."""

import sys

from flexbert.cli.phases import main

if __name__ == "__main__":
    sys.exit(main())
