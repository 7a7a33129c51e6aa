#!/usr/bin/env python
"""``flexbert eval-retrieval`` (flexbert/cli/eval_retrieval.py); this file keeps ``python scripts/eval_retrieval.py`` working."""

import sys

from flexbert.cli.eval_retrieval import main

if __name__ == "__main__":
    sys.exit(main())
