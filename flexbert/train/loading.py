"""What a run starts from: a fresh init, ``init_from`` weights, or a Composer checkpoint.

Decided here, not by Composer's autoresume:

1. ``autoresume`` and an intact checkpoint in ``save_folder`` -> full resume from the newest one
   (truncated / corrupt newer files are skipped with a warning);
2. else ``load_path``: ``load_weights_only`` takes just the weights; ``reset_time`` starts a new
   phase (clock, schedule, data position and RNG fresh; optimizer moments kept unless
   ``load_optimizer_state: false``); otherwise a full resume from that file.
In every case the configured optimizer hyper-parameters override the loaded ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from flexbert.convert.hf import from_hf, load_safetensors
from flexbert.data.fingerprint import tokenizer_fingerprint
from flexbert.train.checkpointing import checkpoint_problem, fetch_resume_checkpoint, find_resume_checkpoint
from flexbert.train.config import RunConfig, SetupError  # noqa: F401 (SetupError: its callers' name for it)
from flexbert.train.run_folder import RunFolderError, identity, load_weights, model_state


def init_from_fingerprint(path: str) -> Optional[str]:
    """The tokenizer fingerprint ``init_from`` was trained with, where it says: an export's
    tokenizer files, a checkpoint's run identity; None when unknown (a bare state dict)."""
    if os.path.isdir(path):
        return tokenizer_fingerprint(path) if os.path.isfile(os.path.join(path, "tokenizer.json")) else None
    if path.endswith(".safetensors") or not os.path.isfile(path) or checkpoint_problem(path) is not None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return identity(state).get("tokenizer") if isinstance(state, dict) and "state" in state else None


def load_initial_weights(model, path: str) -> None:
    """``init_from``: weights only, from an HF ModernBERT / exported FlexBERT folder, a
    ``.safetensors`` file or a ``.pt`` state dict (FlexBertForMaskedLM keys, or a Composer
    checkpoint).  Shapes must match the configured model exactly."""
    if not os.path.exists(path):
        raise SetupError(f"init_from: {path} does not exist")
    try:
        if os.path.isdir(path):
            state = from_hf(path).state_dict()
        elif path.endswith(".safetensors"):
            state = load_safetensors(Path(path))
        else:
            state = _pt_state(path)
    except SetupError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        raise SetupError(f"init_from: cannot read weights from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    try:
        load_weights(model.model, state, f"init_from: {path}")  # decoder.weight may be missing: tied to the embeddings
    except RunFolderError as e:
        raise SetupError(str(e)) from None


def _pt_state(path: str) -> dict:
    """A ``.pt`` file's model weights: a Composer checkpoint or a plain FlexBertForMaskedLM state
    dict, after the integrity check autoresume applies (a torch.save file is a zip with CRCs)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise SetupError(f"init_from: cannot read {path}: {problem}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("state"), dict) and "model" in state["state"]:
        return model_state(state)  # a Composer checkpoint
    return state


def _phase_ignore_keys(cfg: RunConfig) -> list[str]:
    keys = ["state/timestamp", "state/schedulers", "state/callbacks", "state/dataset_state", "rng"]
    if not cfg.load_optimizer_state:
        keys.append("state/optimizers")
    return keys


@dataclass
class LoadPlan:
    path: Optional[str] = None
    weights_only: bool = False
    ignore_keys: Optional[list[str]] = None
    kind: str = "scratch"  # scratch | resume | phase | weights | load


def plan_load(cfg: RunConfig) -> LoadPlan:
    folder = cfg.resolved_save_folder
    if cfg.autoresume and folder:
        found = find_resume_checkpoint(folder)
        if not found and cfg.remote_save_folder:  # a fresh machine: the store has the run's checkpoints
            found = fetch_resume_checkpoint(cfg.remote_save_folder, folder)
        if found:
            return LoadPlan(found, False, None, "resume")
    if cfg.load_path:
        if "://" not in cfg.load_path:
            problem = checkpoint_problem(cfg.load_path)
            if problem is not None:
                raise SetupError(f"load_path: cannot read checkpoint {cfg.load_path}: {problem}")
        if cfg.load_weights_only:
            return LoadPlan(cfg.load_path, True, None, "weights")
        if cfg.reset_time:
            return LoadPlan(cfg.load_path, False, _phase_ignore_keys(cfg), "phase")
        # the rollback recipe: clock, data position and schedule continue; the optimizer's moments
        # only when asked (load_optimizer_state), its hyper-parameters are the config's (after_load)
        return LoadPlan(cfg.load_path, False, None if cfg.load_optimizer_state else ["state/optimizers"], "load")
    return LoadPlan()
