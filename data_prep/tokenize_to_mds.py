#!/usr/bin/env python
"""``flexbert tokenize`` (flexbert/cli/tokenize.py); this file keeps ``python data_prep/tokenize_to_mds.py`` working."""

import sys

from flexbert.cli.tokenize import main

if __name__ == "__main__":
    sys.exit(main())
