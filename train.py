"""Train a FlexBERT model: ``composer train.py configs/tiny.yaml [key=value ...]``.

Also ``composer -n 2 train.py ...`` (DDP; gloo on CPU) and ``python train.py ...``.
See docs/training.md.  Everything lives in ``flexbert.train``; this file only calls it.
"""

import sys

from flexbert.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
