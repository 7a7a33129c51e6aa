"""Model merging beyond averaging: linear, task arithmetic and TIES over FlexBERT weights.

Inputs are anything ``--model`` takes (flexbert/weights/load.py: run folders, checkpoints,
Hugging Face folders); every model must have the base's config and tensor shapes, and, where they
say, the same tokenizer.  The result is written by flexbert/weights/writer.py as a Hugging Face
folder (transformers loads it, ``init_from`` starts a new phase from it) with its record.

* ``linear``: ``sum_i w_i * theta_i`` with the weights normalised to sum to 1 (a weighted average;
  the base, when given, is not part of it).
* ``task_arithmetic`` (Ilharco et al., 2023, "Editing models with task arithmetic"):
  ``theta_base + scale * sum_i w_i * (theta_i - theta_base)``.
* ``ties`` (Yadav et al., 2023, "TIES-Merging: resolving interference when merging models"):
  for each task vector ``tau_i = theta_i - theta_base`` keep the ``density`` fraction of entries
  with the largest magnitude (per tensor) and zero the rest (trim); elect each entry's sign as the
  sign of the sum of the trimmed, weighted task vectors (elect); average the weighted entries whose
  sign agrees with the elected one (disjoint mean); ``theta_base + scale * merged``.

All arithmetic is in fp32; tensors that are not floating point are the base's.  No maintained
merging library was used: mergekit (the common one) maps architectures by name from its own
tables and does not list ModernBERT, and a dependency for three formulas over state dicts would
be larger than the formulas.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch

from flexbert.data.fingerprint import common_fingerprint
from flexbert.errors import FlexBertError
from flexbert.model.model import FlexBertForMaskedLM
from flexbert.weights.load import load_pretrained, mlm_model
from flexbert.weights.writer import ModelWriter, nonfinite

METHODS = ("linear", "task_arithmetic", "ties")


class MergeError(FlexBertError, ValueError):
    """Models that cannot be merged as asked (one line)."""


def _floats(state: dict) -> list[str]:
    return [k for k, v in state.items() if torch.is_floating_point(v)]


def merge_linear(states: Sequence[dict], weights: Sequence[float]) -> dict:
    total = float(sum(weights))  # > 0: check_options
    out = dict(states[0])
    for k in _floats(states[0]):
        acc = sum(w * s[k].float() for w, s in zip(weights, states)) / total
        out[k] = acc.to(states[0][k].dtype)
    return out


def merge_task_arithmetic(base: dict, states: Sequence[dict], weights: Sequence[float], scale: float = 1.0) -> dict:
    out = dict(base)
    for k in _floats(base):
        b = base[k].float()
        out[k] = (b + scale * sum(w * (s[k].float() - b) for w, s in zip(weights, states))).to(base[k].dtype)
    return out


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau`` with all but its ``density`` fraction of largest-magnitude entries set to zero."""
    k = int(round(density * tau.numel()))
    if k >= tau.numel():
        return tau
    if k <= 0:
        return torch.zeros_like(tau)
    threshold = tau.abs().flatten().kthvalue(tau.numel() - k + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def ties_tensor(base: torch.Tensor, others: Sequence[torch.Tensor], weights: Sequence[float], density: float,
                scale: float = 1.0) -> torch.Tensor:
    """TIES for one tensor: trim, elect the sign by summed weighted value, disjoint weighted mean."""
    b = base.float()
    taus = torch.stack([w * trim(o.float() - b, density) for w, o in zip(weights, others)])
    sign = torch.sign(taus.sum(0))
    agree = (torch.sign(taus) == sign) & (taus != 0)
    w = torch.tensor(list(weights), dtype=torch.float32).view(-1, *([1] * b.dim()))
    denom = (agree * w.abs()).sum(0)
    merged = torch.where(denom > 0, (taus * agree).sum(0) / denom.clamp(min=1e-12), torch.zeros_like(b))
    return (b + scale * merged).to(base.dtype)


def merge_ties(base: dict, states: Sequence[dict], weights: Sequence[float], density: float, scale: float = 1.0) -> dict:
    out = dict(base)
    for k in _floats(base):
        out[k] = ties_tensor(base[k], [s[k] for s in states], weights, density, scale)
    return out


def check_options(method: str, n_models: int, weights: Optional[Sequence[float]] = None, density: float = 0.5,
                  scale: float = 1.0, base: bool = False) -> list[float]:
    """Refuse (one line naming the flag) what no merge can use, before any model is read; the
    weights, one per model (default 1 each)."""
    if method not in METHODS:
        raise MergeError(f"--method: unknown method '{method}'; valid choices: {', '.join(METHODS)}")
    if n_models < 1:
        raise MergeError("--models: give at least one model to merge")
    weights = [float(w) for w in weights] if weights is not None else [1.0] * n_models
    if len(weights) != n_models:
        raise MergeError(f"--weights: {len(weights)} weight(s) for {n_models} model(s)")
    bad = next((w for w in weights if not math.isfinite(w)), None)
    if bad is not None:
        raise MergeError(f"--weights: every weight must be a finite number, got {bad}")
    if method == "linear" and not sum(weights) > 0:
        raise MergeError(f"--weights must sum to more than 0, got {weights}")
    if not math.isfinite(scale):
        raise MergeError(f"--scale must be a finite number, got {scale}")
    if method == "ties" and not 0 < density <= 1:
        raise MergeError(f"--density must be in (0, 1], got {density}")
    if method != "linear" and not base:
        raise MergeError(f"--method {method} needs --base (task vectors are differences from it)")
    return weights


def merge_states(method: str, base: Optional[dict], states: Sequence[dict], weights: Optional[Sequence[float]] = None,
                 density: float = 0.5, scale: float = 1.0) -> dict:
    """The merged state dict (FlexBERT names) of ``states`` by ``method``."""
    weights = check_options(method, len(states), weights, density, scale, base is not None)
    if method == "linear":
        return merge_linear(states, weights)
    if method == "task_arithmetic":
        return merge_task_arithmetic(base, states, weights, scale)
    return merge_ties(base, states, weights, density, scale)


def _check_same(paths: Sequence[str], pres: Sequence) -> None:
    first = pres[0]
    for path, pre in zip(paths[1:], pres[1:]):
        if pre.config != first.config:
            diff = sorted(f.name for f in dataclasses.fields(first.config)
                          if getattr(first.config, f.name) != getattr(pre.config, f.name))
            raise MergeError(f"{path} has another model config than {paths[0]} (model.{', model.'.join(diff[:4])}); "
                             "only models of one architecture and size merge")
        only = sorted(set(pre.state) ^ set(first.state))
        if only:
            where = paths[0] if only[0] in first.state else path
            raise MergeError(f"{path} has other weights than {paths[0]}: {only[0]} is only in {where} "
                             f"({len(only)} tensor(s) in one but not the other); only models of one architecture merge")
        shape = next((k for k in first.state if pre.state[k].shape != first.state[k].shape), None)
        if shape is not None:
            raise MergeError(f"{path} has other weights than {paths[0]}: {shape} is {tuple(pre.state[shape].shape)} "
                             f"there, {tuple(first.state[shape].shape)} in {paths[0]}; only models of one size merge")


def merge_models(method: str, models: Sequence[str], out_dir: str, base: Optional[str] = None,
                 weights: Optional[Sequence[float]] = None, density: float = 0.5, scale: float = 1.0,
                 overwrite: bool = False) -> dict:
    """Merge ``models`` (and ``base``) and write ``out_dir`` as a Hugging Face folder."""
    weights = check_options(method, len(models), weights, density, scale, bool(base))
    paths = ([base] if base else []) + list(models)
    writer = ModelWriter("merge", out_dir, overwrite, inputs=paths, keep=paths)
    pres = [load_pretrained(p) for p in paths]
    _check_same(paths, pres)
    writer.inputs = [*writer.inputs, *(p.path for p in pres)]
    states = [mlm_model(p).state_dict() for p in pres]
    merged = merge_states(method, states[0] if base else None, states[1:] if base else states, weights, density, scale)
    bad = nonfinite(merged)
    if bad:
        raise MergeError(f"the merged weights are not finite ({bad}): the inputs or --weights/--scale overflow "
                         f"float32; nothing was written to {out_dir}")
    model = FlexBertForMaskedLM(pres[0].config)
    model.load_state_dict(merged)
    model.tie_weights()
    fingerprint = common_fingerprint({f"model {p}": pre.tokenizer_fingerprint for p, pre in zip(paths, pres)})
    tok_dir = next((p.tokenizer_dir for p in pres if p.tokenizer_dir), None)
    writer.tokenizer(tok_dir, fingerprint, f"model {paths[0]}", pres[0].config.vocab_size)
    writer.write_mlm(model, fallback=False)
    settings = {"method": method, "base": base, "models": list(models), "weights": list(weights) if weights else None,
                "density": density if method == "ties" else None, "scale": scale if method != "linear" else None}
    writer.record(paths, settings)
    return {**settings, "tokenizer": writer.tokenizer_dir, "out": out_dir}
