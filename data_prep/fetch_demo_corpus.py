#!/usr/bin/env python
"""``flexbert fetch-demo-corpus`` (flexbert/cli/fetch_demo_corpus.py); this file keeps ``python data_prep/fetch_demo_corpus.py`` working."""

import sys

from flexbert.cli.fetch_demo_corpus import main

if __name__ == "__main__":
    sys.exit(main())
