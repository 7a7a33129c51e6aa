"""Grow a trained FlexBERT / ModernBERT model into a larger config by weight tiling.

    flexbert tile --from runs/base --config configs/large.yaml \\
        --mode center_wraparound --out runs/large-init/tiled-from-base

--from is a train.py run folder, one training checkpoint (.pt) or a Hugging Face ModernBERT
folder.  The output folder is in the export format (config.json, model.safetensors, tokenizer):
``init_from: OUT`` in a run config and ``AutoModelForMaskedLM.from_pretrained(OUT)`` both load it.
Modes: center_wraparound (ModernBERT-large's), center, edge; ``--rescale`` keeps the source's
function in the copying modes; see flexbert/model/tiling.py.
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.model.tiling import MODES


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert tile")
    p.add_argument("--from", dest="src", required=True, help="run folder, .pt checkpoint or HF folder")
    p.add_argument("--config", required=True, help="target run config (its model section is the new size)")
    p.add_argument("--mode", default="center_wraparound", choices=MODES)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the source's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never an input's folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh init that mode 'center' keeps")
    p.add_argument("--rescale", action="store_true",
                   help="divide weights by how often their inputs were copied, so the grown model computes what the "
                        "source did (copying modes; exact for whole-multiple widths at the same depth)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the target config (e.g. model.hidden_size=256)")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.weights.tiling import write_tiled

    info = write_tiled(a.src, a.config, a.out, a.mode, a.seed, a.tokenizer, a.overrides, a.rescale, a.overwrite)
    print(f"tiled {info['source']} ({info['mode']}; target layer <- source layer {info['layers']}) -> "
          f"init_from: {info['init_from']}")
    return 0


main = command(parser, run, also=(ValueError, OSError))
