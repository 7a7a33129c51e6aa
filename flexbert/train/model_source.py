"""Load a FlexBertForMaskedLM from whatever a user points at: a train.py run folder (newest
intact checkpoint + its ``config.yaml``), one training checkpoint (``.pt``; its run's
``config.yaml`` is two folders up), or a Hugging Face ModernBERT / exported FlexBERT folder.

Reads through the export code (``flexbert.train.export``) and the converter
(``flexbert.convert.hf.from_hf``); used by weight tiling and checkpoint averaging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from flexbert.train.export import ExportError, checkpoint_model_state, newest_checkpoint


@dataclass
class Source:
    model: Any  # FlexBertForMaskedLM (eval mode, tied)
    tokenizer_dir: Optional[str]  # a folder AutoTokenizer reads, when one is known
    run_config: Any = None  # the RunConfig of a run folder / checkpoint; None for an HF folder
    checkpoint: Optional[str] = None


def run_config_of(checkpoint: str):
    from flexbert.train.config import load_run_config

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.yaml")
    if not os.path.exists(path):
        raise ExportError(f"run config {path} not found next to {checkpoint}'s checkpoints folder")
    return load_run_config(path)


def _tokenizer_of(run_cfg) -> Optional[str]:
    try:
        return run_cfg.data_config().tokenizer_dir()
    except Exception:  # noqa: BLE001 - a model without a tokenizer is still usable
        return None


def model_from_checkpoint(checkpoint: str, run_cfg):
    from flexbert.model.model import FlexBertForMaskedLM

    model = FlexBertForMaskedLM(run_cfg.model)
    missing, unexpected = model.load_state_dict(checkpoint_model_state(checkpoint), strict=False)
    missing = [k for k in missing if k != "decoder.weight"]
    if missing or unexpected:
        raise ExportError(f"{checkpoint} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.eval()


def load_source(src: str) -> Source:
    """A Source from a run folder, a ``.pt`` checkpoint or an HF folder; ExportError otherwise."""
    if not os.path.exists(src):
        raise ExportError(f"--from: {src} does not exist")
    if os.path.isdir(src) and os.path.exists(os.path.join(src, "config.json")):
        from flexbert.convert.hf import from_hf

        has_tok = os.path.exists(os.path.join(src, "tokenizer.json")) or os.path.exists(os.path.join(src, "tokenizer_config.json"))
        return Source(from_hf(src).eval(), src if has_tok else None)
    if os.path.isdir(src):
        if not os.path.exists(os.path.join(src, "config.yaml")):
            raise ExportError(f"--from: {src} is neither a run folder (config.yaml) nor an HF folder (config.json)")
        checkpoint = newest_checkpoint(src)
    else:
        checkpoint = src
    cfg = run_config_of(checkpoint)
    return Source(model_from_checkpoint(checkpoint, cfg), _tokenizer_of(cfg), cfg, checkpoint)
