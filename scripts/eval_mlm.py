#!/usr/bin/env python
"""``flexbert eval-mlm`` (flexbert/cli/eval_mlm.py); this file keeps ``python scripts/eval_mlm.py`` working."""

import sys

from flexbert.cli.eval_mlm import main

if __name__ == "__main__":
    sys.exit(main())
