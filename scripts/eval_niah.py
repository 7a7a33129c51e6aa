#!/usr/bin/env python
"""``flexbert eval-niah`` (flexbert/cli/eval_niah.py); this file keeps ``python scripts/eval_niah.py`` working."""

import sys

from flexbert.cli.eval_niah import main

if __name__ == "__main__":
    sys.exit(main())
