#!/usr/bin/env python
"""``flexbert synthetic-shards`` (flexbert/cli/synthetic_shards.py); this file keeps ``python data_prep/synthetic_shards.py`` working."""

import sys

from flexbert.cli.synthetic_shards import main

if __name__ == "__main__":
    sys.exit(main())
