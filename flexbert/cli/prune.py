"""Shrink a trained FlexBERT / ModernBERT model: keep chosen layers, optionally narrow the MLPs.

    flexbert prune --from runs/tiny --every 2 --out runs/tiny-pruned
    flexbert prune --from runs/base --depth 12 --mlp-width 768 --out runs/base-12l

--from is a train.py run folder, one training checkpoint (.pt) or a Hugging Face ModernBERT folder.
Layers: --keep 0,2,4 (those), --every N (0, N, 2N, ...) or --depth N (N spread evenly, layer 0
first); the global/local attention pattern of the kept layers is kept (global_attn_every_n_layers
recomputed, or the choice refused).  --mlp-width keeps the intermediate units of largest weight
norm.  The output is in the export format: train on from it with ``init_from: OUT`` and the model
overrides printed (with ``teacher.model: --from`` to distill; docs/training.md).  The inverse of
``flexbert tile``; see flexbert/model/pruning.py.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least


def layer_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer numbers such as 0,2,4, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert prune")
    p.add_argument("--from", dest="src", required=True, help="run folder, .pt checkpoint or HF folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep", type=layer_list, help="the layers to keep, e.g. 0,2,4 (0-based)")
    which.add_argument("--every", type=at_least(1), help="keep layers 0, N, 2N, ...")
    which.add_argument("--depth", type=at_least(1), help="keep N layers spread evenly (layer 0 first)")
    p.add_argument("--mlp-width", type=at_least(1), help="narrow every MLP to this intermediate size (by weight norm)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the source's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never an input's folder)")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.weights.pruning import write_pruned

    info = write_pruned(a.src, a.out, a.keep, a.every, a.depth, a.mlp_width, a.tokenizer, a.overwrite)
    print(f"pruned {info['source']}: layers {info['layers']} of {info['source_layers']}, MLP width {info['mlp_width']} "
          f"of {info['source_mlp_width']}, {info['parameters']:,} of {info['source_parameters']:,} parameters -> "
          f"init_from: {info['init_from']}\ntrain on with: init_from={info['init_from']} {' '.join(info['overrides'])}")
    return 0


main = command(parser, run, also=(ValueError, OSError))
