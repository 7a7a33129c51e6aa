#!/usr/bin/env python
"""``flexbert merge`` (flexbert/cli/merge.py); this file keeps ``python scripts/merge_checkpoints.py`` working."""

import sys

from flexbert.cli.merge import main

if __name__ == "__main__":
    sys.exit(main())
