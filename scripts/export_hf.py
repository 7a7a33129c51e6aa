#!/usr/bin/env python
"""``flexbert export`` (flexbert/cli/export.py); this file keeps ``python scripts/export_hf.py`` working."""

import sys

from flexbert.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
