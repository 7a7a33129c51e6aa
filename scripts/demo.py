#!/usr/bin/env python
"""``flexbert demo`` (flexbert/cli/demo.py); this file keeps ``python scripts/demo.py`` working."""

import sys

from flexbert.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
