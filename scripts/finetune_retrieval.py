#!/usr/bin/env python
"""``flexbert finetune-retrieval`` (flexbert/cli/finetune_retrieval.py); this file keeps ``python scripts/finetune_retrieval.py`` working."""

import sys

from flexbert.cli.finetune_retrieval import main

if __name__ == "__main__":
    sys.exit(main())
