"""Export a FlexBERT training checkpoint to a Hugging Face ModernBERT folder.

    flexbert export --run-dir runs/tiny --out runs/tiny/hf
    flexbert export --checkpoint runs/base/checkpoints/ba1000.pt --out hf/

The folder (config.json, model.safetensors, tokenizer files, and a model card README.md with the
architecture, the run's training config, tokens seen and phases) loads with
``AutoModelForMaskedLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``, offline, and (unless
``--pooling none``) with ``SentenceTransformer(folder)`` as an encoder with mean or [CLS] pooling.
``--push-to-hub owner/name`` then uploads the folder to the Hugging Face Hub (huggingface_hub;
``HF_TOKEN`` or ``huggingface-cli login``; the card's snippets load ``owner/name``).
"""

from __future__ import annotations

import argparse

from flexbert.cli.common import command, make_parser
from flexbert.weights.publish import check_repo_id, push_to_hub


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert export")
    p.add_argument("--run-dir", help="a train.py run folder: newest intact checkpoint + its config.yaml")
    p.add_argument("--checkpoint", help="a specific checkpoint (default: the run's newest intact one)")
    p.add_argument("--config", help="a run config to use instead of the one the checkpoint was trained with")
    p.add_argument("--tokenizer", help="tokenizer folder (default: from the config's data section)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never an input's folder)")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "none"],
                   help="sentence-transformers pooling written with the export (none: no sentence-transformers files)")
    p.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to the Hugging Face Hub as REPO (owner/name)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.weights.export import export_to_hf

    if not a.run_dir and not a.checkpoint:
        parser().error("give --run-dir or --checkpoint")
    if a.push_to_hub:
        check_repo_id(a.push_to_hub)  # before anything is written
    info = export_to_hf(a.out, run_dir=a.run_dir, checkpoint=a.checkpoint, config=a.config, tokenizer=a.tokenizer,
                        pooling=a.pooling, overwrite=a.overwrite, name=a.push_to_hub or "")
    print(f"exported {info['checkpoint']} -> {info['out']} (tokenizer: {info['tokenizer'] or 'none'})", flush=True)
    if a.push_to_hub:
        print(f"pushed {info['out']} -> {push_to_hub(info['out'], a.push_to_hub, a.private)}")
    return 0


main = command(parser, run, also=(ValueError, OSError))
