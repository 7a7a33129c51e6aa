#!/usr/bin/env python
"""``flexbert finetune`` (flexbert/cli/finetune.py); this file keeps ``python scripts/finetune.py`` working."""

import sys

from flexbert.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
