#!/usr/bin/env python
"""``flexbert mine-negatives`` (flexbert/cli/mine_negatives.py); this file keeps ``python data_prep/mine_negatives.py`` working."""

import sys

from flexbert.cli.mine_negatives import main

if __name__ == "__main__":
    sys.exit(main())
