"""Needle in a haystack for an encoder: a key-value needle at chosen depths of filler text of
chosen lengths, the value filled in by the MLM head (flexbert/eval/niah.py).

    flexbert eval-niah --model runs/tiny-decay --out runs/niah-tiny-decay
    flexbert eval-niah --model runs/demo/hf --lengths 128 512 2048 --depths 0 0.5 1 --samples 20 \\
        --filler runs/demo/corpus/pretrain/validation.jsonl --out runs/demo/niah

--model is a run folder, checkpoint or Hugging Face folder (its MLM head).  Each input is
[CLS] filler + "The secret number of KEY is VALUE." at --depths of the filler + the same sentence
with the value masked + [SEP], --lengths tokens long; the score is the top-1 prediction at each
masked value token.  --out writes OUT/result.json (the length x depth table under details.table)
and OUT/niah.png (the heatmap).
"""

from __future__ import annotations

import argparse
import json
import os

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.eval.evaluation import run_evaluation
from flexbert.eval.niah import DEFAULT_DEPTHS, DEFAULT_LENGTHS, format_table
from flexbert.experiments.plots import niah_heatmap

HEATMAP = "niah.png"


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert eval-niah")
    p.add_argument("--model", required=True, help="run folder, checkpoint or Hugging Face folder")
    p.add_argument("--lengths", nargs="+", type=at_least(8), default=list(DEFAULT_LENGTHS), metavar="TOKENS")
    p.add_argument("--depths", nargs="+", type=float, default=list(DEFAULT_DEPTHS), metavar="FRACTION",
                   help="where the needle sits in the filler: 0 = start, 1 = next to the question")
    p.add_argument("--samples", type=at_least(1), default=10, help="needles per (length, depth) cell")
    p.add_argument("--filler", help="a corpus file (.txt, .jsonl, ...; default: Python's own documentation)")
    p.add_argument("--values", nargs="+", metavar="VALUE", help="what a value may be (default: the numbers 100-999)")
    p.add_argument("--tokenizer", help="default: the model's")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--batch-tokens", type=at_least(1), default=8192, help="tokens per forward")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write OUT/result.json and OUT/niah.png")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--json", action="store_true", help="print the metrics and the table as one JSON line")
    return p


def run(a: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(a).items() if k != "json" and v is not None}
    result = run_evaluation("niah", options)
    rows = result.details["table"]
    if a.out:
        niah_heatmap(rows, os.path.join(a.out, HEATMAP), title=f"needle in a haystack: {a.model}")
    if a.json:
        print(json.dumps({**result.metrics["test"], "model": a.model, "table": rows}))
        return 0
    m = result.metrics["test"]
    print(f"{a.model}: needle value accuracy {m['accuracy']:.3f} (exact {m['exact']:.3f}); by length and depth:")
    print(format_table(rows))
    return 0


main = command(parser, run, also=(ValueError,))
