"""Merge FlexBERT / ModernBERT models: linear, task arithmetic or TIES (flexbert/weights/merging.py).

    flexbert merge --method linear --models runs/a runs/b --out runs/ab-merged
    flexbert merge --method ties --base runs/base/hf --models runs/ft-a runs/ft-b \\
        --weights 1 1 --density 0.3 --out runs/ties

Fine-tuned classifiers of one base merge their shared encoder; ``--heads keep`` (the default)
writes ``OUT/<task>`` per model, the merged encoder with that model's own classification head and
labels; ``--heads drop`` writes one masked-LM folder with the base's MLM head instead:

    flexbert merge --method ties --base hf/base --models runs/sst2/hf runs/mnli/hf --out runs/merged

Inputs are run folders (their newest intact checkpoint), checkpoint files or Hugging Face folders
of one architecture and size.  The output is a Hugging Face folder (model, tokenizer, merge.json):
``AutoModelForMaskedLM.from_pretrained(OUT)`` loads it and ``init_from: OUT`` starts a new phase.
"""

from __future__ import annotations

import argparse
import os

from flexbert.cli.common import command, make_parser
from flexbert.config import finite
from flexbert.weights.merging import HEADS, METHODS, merge_models


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert merge")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--models", nargs="+", required=True, help="run folders, checkpoints or Hugging Face folders")
    p.add_argument("--base", help="the model the others were trained from (task_arithmetic, ties)")
    p.add_argument("--weights", nargs="+", type=finite(), help="one per --models entry (default: 1 each)")
    p.add_argument("--density", type=finite(0, 1, lo_open=True), default=0.5, help="ties: fraction of each task vector kept (default 0.5)")
    p.add_argument("--scale", type=finite(), default=1.0, help="task_arithmetic, ties: multiplier of the merged task vector")
    p.add_argument("--heads", choices=HEADS, default="keep",
                   help="fine-tuned classifiers: keep each one's classification head (OUT/<task> per model, the "
                        "default) or drop them (OUT: one masked-LM folder with --base's MLM head)")
    p.add_argument("--out", required=True, help="output folder (Hugging Face layout)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
    return p


def run(a: argparse.Namespace) -> int:
    info = merge_models(a.method, a.models, a.out, a.base, a.weights, a.density, a.scale, a.overwrite, a.heads)
    if info.get("tasks"):
        print(f"merged the encoder of {len(a.models)} task model(s) by {a.method}; each keeps its own "
              f"classification head: {', '.join(os.path.join(a.out, n) for n in info['tasks'])}")
        return 0
    if "heads" in info:
        print(f"merged the encoder of {len(a.models)} task model(s) by {a.method}; their classification heads "
              f"dropped, the MLM head is --base's -> {info['out']}")
        return 0
    print(f"merged {len(a.models)} model(s) by {a.method} -> {info['out']} (tokenizer: {info['tokenizer'] or 'none'})")
    return 0


main = command(parser, run, also=(ValueError, OSError))
