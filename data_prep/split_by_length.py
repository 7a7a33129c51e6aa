#!/usr/bin/env python
"""``flexbert split-by-length`` (flexbert/cli/split_by_length.py); this file keeps ``python data_prep/split_by_length.py`` working."""

import sys

from flexbert.cli.split_by_length import main

if __name__ == "__main__":
    sys.exit(main())
