#!/usr/bin/env python
"""``flexbert diagnose`` (flexbert/cli/diagnose.py); this file keeps ``python scripts/diagnose.py`` working."""

import sys

from flexbert.cli.diagnose import main

if __name__ == "__main__":
    sys.exit(main())
