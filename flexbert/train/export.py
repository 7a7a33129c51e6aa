"""Composer checkpoint -> Hugging Face ModernBERT folder (safetensors + config + tokenizer).

No Composer import: a FlexBERT checkpoint is a torch zip whose ``state.model`` holds the
ComposerModel's weights (``model.`` + FlexBertForMaskedLM names).  The model config comes from the
run's ``config.yaml`` (written by train.py next to ``metrics.jsonl``), the tokenizer from the data
section (``data.tokenizer`` or the copy inside the shard folder).  The conversion itself is
``flexbert.convert.hf.to_hf``.
"""

from __future__ import annotations

import os
from typing import Optional

import torch


class ExportError(RuntimeError):
    """One-line reason an export cannot be done."""


def newest_checkpoint(run_dir: str, save_folder: Optional[str] = None) -> str:
    """The newest intact checkpoint of a run: in its ``save_folder`` when it set one, else in
    ``{run_dir}/checkpoints``."""
    from flexbert.train.checkpointing import find_resume_checkpoint

    folder = save_folder or os.path.join(run_dir, "checkpoints")
    path = find_resume_checkpoint(folder)
    if path is None:
        raise ExportError(f"no intact checkpoint in {folder}")
    return path


def checkpoint_model_state(path: str) -> dict[str, torch.Tensor]:
    """FlexBertForMaskedLM state dict from a Composer checkpoint (handles compiled-model names)."""
    from flexbert.train.checkpointing import checkpoint_problem

    problem = checkpoint_problem(path, full_check=False)
    if problem is not None:
        raise ExportError(f"cannot read checkpoint {path}: {problem}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        weights = state["state"]["model"]
    except (KeyError, TypeError):
        raise ExportError(f"{path} is not a FlexBERT/Composer checkpoint (no state.model)") from None
    out = {}
    for k, v in weights.items():
        k = k.replace("_orig_mod.", "")
        out[k[len("model."):] if k.startswith("model.") else k] = v
    return out


def export_to_hf(out_dir: str, run_dir: Optional[str] = None, checkpoint: Optional[str] = None,
                 config: Optional[str] = None, tokenizer: Optional[str] = None) -> dict:
    """Write ``out_dir`` loadable by ``AutoModelForMaskedLM`` / ``AutoTokenizer``; returns a summary."""
    from flexbert.convert.hf import to_hf
    from flexbert.model.model import FlexBertForMaskedLM
    from flexbert.train.config import load_run_config

    if checkpoint is None and run_dir is None:
        raise ExportError("give a run folder or a checkpoint")
    if config is None:
        base = run_dir or os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
        config = os.path.join(base, "config.yaml")
    if not os.path.exists(config):
        raise ExportError(f"run config {config} not found (pass --config)")
    cfg = load_run_config(config)
    if checkpoint is None:
        checkpoint = newest_checkpoint(run_dir, cfg.save_folder)
    model = FlexBertForMaskedLM(cfg.model)
    state = checkpoint_model_state(checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "decoder.weight"]
    if missing or unexpected:
        raise ExportError(f"checkpoint does not match the config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    tok = None
    tok_dir = tokenizer
    if tok_dir is None:
        try:
            tok_dir = cfg.data.tokenizer_dir()
        except (FileNotFoundError, Exception):  # noqa: BLE001 - a model without tokenizer is still exportable
            tok_dir = None
    if tok_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_dir)
    to_hf(model.eval(), out_dir, tokenizer=tok)
    return {"checkpoint": checkpoint, "config": config, "tokenizer": tok_dir, "out": out_dir}
