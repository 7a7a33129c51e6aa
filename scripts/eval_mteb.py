#!/usr/bin/env python
"""``flexbert eval-mteb`` (flexbert/cli/eval_mteb.py); this file keeps ``python scripts/eval_mteb.py`` working."""

import sys

from flexbert.cli.eval_mteb import main

if __name__ == "__main__":
    sys.exit(main())
