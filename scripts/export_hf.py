#!/usr/bin/env python
"""Export a FlexBERT training checkpoint to a Hugging Face ModernBERT folder.

    python scripts/export_hf.py --run-dir runs/tiny --out runs/tiny/hf
    python scripts/export_hf.py --checkpoint runs/base/checkpoints/ba1000.pt --out hf/

The folder (config.json, model.safetensors, tokenizer files, and a model card README.md with the
architecture, the run's training config, tokens seen and phases) loads with
``AutoModelForMaskedLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``, offline, and (unless
``--pooling none``) with ``SentenceTransformer(folder)`` as an encoder with mean or [CLS] pooling.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="a train.py run folder: newest intact checkpoint + its config.yaml")
    p.add_argument("--checkpoint", help="a specific checkpoint (default: the run's newest intact one)")
    p.add_argument("--config", help="a run config to use instead of the one the checkpoint was trained with")
    p.add_argument("--tokenizer", help="tokenizer folder (default: from the config's data section)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out whole (its files are deleted; never an input's folder)")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "none"],
                   help="sentence-transformers pooling written with the export (none: no sentence-transformers files)")
    a = p.parse_args(argv)
    if not a.run_dir and not a.checkpoint:
        p.error("give --run-dir or --checkpoint")
    from flexbert.config import ConfigError
    from flexbert.train.export import ExportError, export_to_hf

    try:
        info = export_to_hf(a.out, run_dir=a.run_dir, checkpoint=a.checkpoint, config=a.config, tokenizer=a.tokenizer,
                            pooling=a.pooling, overwrite=a.overwrite)
    except (ExportError, ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {info['checkpoint']} -> {info['out']} (tokenizer: {info['tokenizer'] or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
