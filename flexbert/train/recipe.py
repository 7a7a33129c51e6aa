"""The Trainer recipe shared by every Composer run FlexBERT builds (pretraining, fine-tuning, the
GPU probe): where it runs, in what precision, the model with ``compile`` applied, and the Trainer
settings every run shares.

``flexbert/train/builders.py`` assembles pretraining from these pieces and
``flexbert/eval/classifier.py`` fine-tuning; neither decides device or precision itself.
"""

from __future__ import annotations

from typing import Any

import torch

from flexbert.model.compile import compile_model
from flexbert.model.static import StaticShapes
from flexbert.train.composer_model import FlexBertMLM
from flexbert.train.loading import SetupError


def resolve_device(device: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is there, else ``cpu``; ``gpu`` without CUDA is an error."""
    if device == "gpu" and not torch.cuda.is_available():
        raise SetupError("device: gpu was asked for but CUDA is not available")
    if device != "auto":
        return device
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``amp_bf16`` on GPU, ``fp32`` on CPU (Composer trains fp32 there)."""
    if precision == "auto":
        return "amp_bf16" if device == "gpu" else "fp32"
    if device == "cpu" and precision != "fp32":
        raise SetupError(f"precision: {precision} is not supported on CPU (Composer trains fp32 there); use fp32 or auto")
    return precision


COMPUTE_DTYPES = {"fp32": torch.float32, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}


def build_model(cfg) -> FlexBertMLM:
    """The Composer model of a RunConfig with ``compile`` applied; a compiled model gets fixed row
    shapes from the data section (an eager one keeps the cheaper per-batch shapes: no padding
    documents)."""
    shapes = None
    if cfg.compile != "none":
        data = cfg.data
        masking = max(data.max_mlm_probability, data.eval_mlm_probability)
        shapes = StaticShapes.for_rows(data.row_tokens, data.max_seq_len, masking, cfg.model.sparse_prediction)
    model = FlexBertMLM(cfg.model, shapes=shapes)
    model.model.model.checkpoint_layers(cfg.activation_checkpointing)  # before compiling: traced with it
    if cfg.compile != "none":
        device = "cuda" if resolve_device(cfg.device) == "gpu" else "cpu"
        dtype = COMPUTE_DTYPES[resolve_precision(cfg.precision, resolve_device(cfg.device))]
        compile_model(model.model, cfg.compile, compile_mode=cfg.compile_mode, device=device, dtype=dtype)
    return model


def trainer_settings(*, device: str, precision: str, seed: int) -> dict[str, Any]:
    """Trainer keyword arguments every FlexBERT run shares: the LR schedule is stepped by
    ``ScheduleStepper`` at BATCH_START (token-exact), progress goes through FlexBERT's own loggers."""
    return {
        "device": device,
        "precision": precision,
        "seed": seed,
        "step_schedulers_every_batch": False,
        "progress_bar": False,
        "log_to_console": False,
    }
