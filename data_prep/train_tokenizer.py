#!/usr/bin/env python
"""``flexbert train-tokenizer`` (flexbert/cli/train_tokenizer.py); this file keeps ``python data_prep/train_tokenizer.py`` working."""

import sys

from flexbert.cli.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
