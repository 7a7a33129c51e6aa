#!/usr/bin/env python
"""``flexbert tile`` (flexbert/cli/tile.py); this file keeps ``python scripts/tile_weights.py`` working."""

import sys

from flexbert.cli.tile import main

if __name__ == "__main__":
    sys.exit(main())
