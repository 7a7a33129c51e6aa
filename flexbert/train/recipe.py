"""The Trainer recipe shared by every Composer run FlexBERT builds (pretraining, fine-tuning, the
GPU probe): where it runs, in what precision, the model with the training techniques applied
(``apply_techniques``: the one place, in a fixed order), and the Trainer settings every run shares.

``flexbert/train/builders.py`` assembles pretraining from these pieces and
``flexbert/eval/classifier.py`` fine-tuning; neither decides device or precision itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from flexbert.model.compile import compile_model
from flexbert.model.static import StaticShapes
from flexbert.train.composer_model import FlexBertMLM
from flexbert.train.loading import SetupError
from flexbert.train.parallelism import composer_parallelism


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


@dataclass
class Techniques:
    """What ``apply_techniques`` did to a model."""

    checkpointed: list[int]  # blocks recomputed in backward
    compiled: str  # none | model | blocks
    parallelism_config: Optional[dict]  # the Trainer's (FSDP); None: DDP, or not asked for


def apply_techniques(model: FlexBertMLM, cfg, shard: bool = False) -> Techniques:
    """The training techniques of a RunConfig, in the order that composes (as torchtitan's
    ``parallelize`` does): activation checkpointing (the blocks compile then traces with their
    recomputation), ``torch.compile``, and - with ``shard`` - sharding (``parallelism: fsdp``: the
    Trainer's ``parallelism_config``; Composer wraps the compiled blocks when it builds the run)."""
    encoder = model.encoder
    encoder.checkpoint_layers(cfg.activation_checkpointing)
    device = resolve_device(cfg.device)
    if cfg.compile != "none":
        dtype = COMPUTE_DTYPES[resolve_precision(cfg.precision, device)]
        compile_model(model.model, cfg.compile, compile_mode=cfg.compile_mode, device="cuda" if device == "gpu" else "cpu",
                      dtype=dtype)
    parallelism = composer_parallelism(cfg.parallelism, cfg.fsdp, device) if shard else None
    return Techniques(sorted(encoder.checkpointed), cfg.compile, parallelism)


def build_model(cfg, shard: bool = False) -> FlexBertMLM:
    """The Composer model of a RunConfig with its techniques applied (``model.techniques``); a
    compiled model gets fixed row shapes from the data section (an eager one keeps the cheaper
    per-batch shapes: no padding documents); ``objective: clm`` runs it with causal attention."""
    shapes = None
    if cfg.compile != "none":
        data = cfg.data
        shapes = StaticShapes.for_rows(data.row_tokens, data.max_seq_len, cfg.max_predicted_fraction(evaluation=True),
                                       cfg.model.sparse_prediction)
    model = FlexBertMLM(cfg.model, shapes=shapes, causal=cfg.causal)
    model.techniques = apply_techniques(model, cfg, shard)
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
