#!/usr/bin/env python
"""``flexbert prune`` (flexbert/cli/prune.py); this file keeps ``python scripts/prune_layers.py`` working."""

import sys

from flexbert.cli.prune import main

if __name__ == "__main__":
    sys.exit(main())
