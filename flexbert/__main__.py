"""``python -m flexbert COMMAND [ARGS]``: the ``flexbert`` command (flexbert/cli/main.py)."""

import sys

from flexbert.cli.main import main

sys.exit(main())
