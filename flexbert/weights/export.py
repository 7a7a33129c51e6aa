"""A training checkpoint -> a Hugging Face ModernBERT folder (safetensors, config, tokenizer,
sentence-transformers files, model card).

The checkpoint, its config and its progress are read through the run folder
(flexbert/train/run_folder.py); the folder is written by flexbert/weights/writer.py (output policy,
tokenizer check, the record), the sentence-transformers files by ``flexbert.convert.sentence``, the
card by ``flexbert.convert.model_card``.
"""

from __future__ import annotations

import os
from typing import Optional

import yaml

from flexbert.convert.model_card import write_model_card
from flexbert.convert.sentence import write_sentence_transformers
from flexbert.data.source import tokenizer_dir
from flexbert.errors import FlexBertError
from flexbert.model.model import FlexBertForMaskedLM
from flexbert.train.config import RunConfig, as_plain_dict, load_run_config, with_known_data
from flexbert.train.run_folder import (
    RunFolder,
    RunFolderError,
    checkpoint_config,
    identity,
    load_checkpoint,
    load_weights,
    model_state,
    progress,
    run_of_checkpoint,
)
from flexbert.weights.writer import ModelWriter


class ExportError(FlexBertError, RuntimeError):
    """One-line reason an export cannot be done."""


def _source(run_dir: Optional[str], checkpoint: Optional[str], config: Optional[str]) -> tuple[str, dict, RunConfig]:
    """(checkpoint path, checkpoint, the config it was trained with)."""
    if checkpoint is None and run_dir is None:
        raise ExportError("give a run folder or a checkpoint")
    try:
        if checkpoint is None:
            run = RunFolder(run_dir)
            cfg = run.load_config()
            checkpoint = run.newest_checkpoint(cfg)
        ckpt = load_checkpoint(checkpoint)
        cfg = with_known_data(load_run_config(config)) if config else checkpoint_config(checkpoint, ckpt)
    except RunFolderError as e:
        raise ExportError(str(e)) from None
    return checkpoint, ckpt, cfg


def phase_history(cfg: RunConfig, ckpt: dict, limit: int = 10) -> list[dict]:
    """Oldest first: one dict per phase (run name, sequence length, theta, LR, schedule, tokens,
    what it started from), following ``load_path`` back through the earlier checkpoints."""
    phases: list[dict] = []
    while cfg is not None and len(phases) < limit:
        tokens, batches = progress(ckpt) if ckpt is not None else (None, None)
        phases.append({"run_name": cfg.run_name, "max_seq_len": cfg.data.max_seq_len,
                       "global_rope_theta": cfg.model.global_rope_theta, "lr": cfg.optimizer.lr,
                       "scheduler": cfg.scheduler.get("name"), "tokens": tokens, "batches": batches,
                       "init": cfg.load_path or cfg.init_from or "random init"})
        previous = cfg.load_path
        cfg = ckpt = None
        if previous and "://" not in previous and os.path.exists(previous):
            try:
                ckpt = load_checkpoint(previous)
                cfg = checkpoint_config(previous, ckpt)
            except (RunFolderError, ValueError):
                break  # an earlier phase we cannot read: the history stops there
    return phases[::-1]


def _tokenizer_dir(cfg: RunConfig, tokenizer: Optional[str]) -> Optional[str]:
    if tokenizer:
        return tokenizer
    try:
        return tokenizer_dir(cfg.data)
    except FileNotFoundError:  # a model without its tokenizer is still exportable
        return None


def export_to_hf(out_dir: str, run_dir: Optional[str] = None, checkpoint: Optional[str] = None,
                 config: Optional[str] = None, tokenizer: Optional[str] = None, pooling: str = "mean",
                 overwrite: bool = False, name: str = "") -> dict:
    """Write ``out_dir`` loadable by ``AutoModelForMaskedLM`` / ``AutoTokenizer`` and (unless
    ``pooling`` is ``none``) ``SentenceTransformer``, with a model card (``name``: what its usage
    snippets load, default the folder's name); returns a summary.

    Everything is checked before ``out_dir`` is touched; a non-empty ``out_dir`` is replaced whole
    only with ``overwrite`` (flexbert/weights/writer.py), never when it holds an input."""
    checkpoint, ckpt, cfg = _source(run_dir, checkpoint, config)
    found = run_of_checkpoint(checkpoint, ckpt)
    writer = ModelWriter("export", out_dir, overwrite, inputs=[checkpoint, config], keep=[run_dir, found.path if found else None])
    model = FlexBertForMaskedLM(cfg.model)
    try:
        load_weights(model, model_state(ckpt), f"checkpoint {checkpoint}")
    except RunFolderError as e:
        raise ExportError(str(e)) from None
    model.tie_weights()
    fingerprint = identity(ckpt).get("tokenizer")
    writer.tokenizer(_tokenizer_dir(cfg, tokenizer), fingerprint, f"checkpoint {checkpoint}", cfg.model.vocab_size)
    writer.write_mlm(model, fallback=False)
    write_sentence_transformers(out_dir, cfg.model.hidden_size, cfg.data.max_seq_len, pooling)
    tokens, batches = progress(ckpt)
    n_params = sum(p.numel() for name, p in model.named_parameters() if name != "decoder.weight")
    run = {"run_name": cfg.run_name, "max_seq_len": cfg.data.max_seq_len, "tokens": tokens, "batches": batches,
           "config_yaml": yaml.safe_dump(as_plain_dict(cfg), sort_keys=False)}
    write_model_card(out_dir, cfg.model, run, phase_history(cfg, ckpt), n_params, pooling, name)
    writer.record([checkpoint], {"pooling": pooling, "tokens": tokens, "batches": batches})
    return {"checkpoint": checkpoint, "run_dir": found.path if found else None, "tokenizer": writer.tokenizer_dir,
            "out": out_dir, "tokenizer_fingerprint": fingerprint}
