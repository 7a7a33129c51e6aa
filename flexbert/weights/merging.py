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

Fine-tuned task models of one base (classifiers, as ``flexbert finetune`` writes them) merge too:
their shared encoder (``model.*`` and the prediction head's ``head.*``, which fine-tuning trains
from the base's) is merged as above; the task heads (``classifier.*``), trained from scratch per
task, are never averaged.  ``heads="keep"`` (the default) writes one classifier folder per task
model, ``OUT/<task>``: the merged encoder with that model's own head and labels.  ``heads="drop"``
writes one masked-LM folder: the merged encoder with the base's MLM head (the base must have one).

All arithmetic is in fp32; tensors that are not floating point are the base's.  No maintained
merging library was used: mergekit (the common one) maps architectures by name from its own
tables and does not list ModernBERT, and a dependency for three formulas over state dicts would
be larger than the formulas.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Optional, Sequence

import torch

from flexbert.data.fingerprint import common_fingerprint
from flexbert.data.outputs import prepare_output_dir
from flexbert.errors import FlexBertError
from flexbert.model.model import FlexBertForMaskedLM, FlexBertForSequenceClassification
from flexbert.weights.load import load_pretrained, mlm_model
from flexbert.weights.writer import ModelWriter, nonfinite

METHODS = ("linear", "task_arithmetic", "ties")
HEADS = ("keep", "drop")  # what becomes of fine-tuned task models' classification heads


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
                 overwrite: bool = False, heads: str = "keep") -> dict:
    """Merge ``models`` (and ``base``) and write ``out_dir`` as a Hugging Face folder (classifiers:
    see ``merge_task_models``)."""
    weights = check_options(method, len(models), weights, density, scale, bool(base))
    paths = ([base] if base else []) + list(models)
    writer = ModelWriter("merge", out_dir, overwrite, inputs=paths, keep=paths)
    pres = [load_pretrained(p) for p in paths]
    if any(_is_classifier(p) for p in pres):
        settings = {"method": method, "base": base, "models": list(models), "weights": list(weights) if weights else None,
                    "density": density if method == "ties" else None, "scale": scale if method != "linear" else None}
        return merge_task_models(writer, paths, pres, bool(base), settings, heads)
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


# --------------------------------------------------------------------------- fine-tuned task models
ENCODER = ("model.", "head.")  # what fine-tuning shares with the base: the encoder and the head's dense + norm
TASK_FIELDS = ("num_labels", "classifier_pooling", "classifier_dropout", "embedding_dropout", "attention_dropout",
               "attn_out_dropout", "mlp_dropout")  # may differ between task models: no weight depends on them


def _is_classifier(pre) -> bool:
    return any(k.startswith("classifier.") for k in pre.state)


def _encoder(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(ENCODER)}


def _check_encoders(paths: Sequence[str], pres: Sequence) -> None:
    """One architecture (task fields aside) and the same encoder tensors, or one line naming the first difference."""
    first, enc = pres[0], _encoder(pres[0].state)
    for path, pre in zip(paths[1:], pres[1:]):
        diff = [f.name for f in dataclasses.fields(first.config) if f.name not in TASK_FIELDS
                and getattr(first.config, f.name) != getattr(pre.config, f.name)]
        if diff:
            raise MergeError(f"{path} has another model config than {paths[0]} (model.{', model.'.join(diff[:4])}); "
                             "only fine-tuned models of one base merge")
        other = _encoder(pre.state)
        odd = sorted(set(enc) ^ set(other)) or [k for k in enc if enc[k].shape != other[k].shape]
        if odd:
            raise MergeError(f"{path} has another encoder than {paths[0]} (first difference: {odd[0]})")


def _task_names(paths: Sequence[str]) -> list[str]:
    """A folder name per task model: its path's last part that is not ``hf`` (``runs/sst2/hf`` -> ``sst2``)."""
    names: list[str] = []
    for path in paths:
        parts = [p for p in os.path.normpath(os.path.abspath(path)).split(os.sep) if p]
        name = next((p for p in reversed(parts) if p != "hf"), "model")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(name)[0]) or "model"
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return names


def merge_task_models(writer: ModelWriter, paths: Sequence[str], pres: Sequence, has_base: bool, settings: dict,
                      heads: str) -> dict:
    """Merge fine-tuned task models' shared encoder; keep each one's classification head
    (``OUT/<task>`` per model) or drop them (``OUT``: a masked-LM folder with the base's MLM head)."""
    if heads not in HEADS:
        raise MergeError(f"--heads: unknown choice '{heads}'; valid choices: {', '.join(HEADS)}")
    _check_encoders(paths, pres)
    tasks, task_paths = (pres[1:], paths[1:]) if has_base else (pres, paths)
    if heads == "keep" and not all(_is_classifier(t) for t in tasks):
        plain = next(p for p, t in zip(task_paths, tasks) if not _is_classifier(t))
        raise MergeError(f"--heads keep: {plain} has no classification head to keep; merge classifiers only, "
                         "or pass --heads drop")
    if heads == "drop" and not (has_base and not _is_classifier(pres[0])):
        raise MergeError("--heads drop writes a masked-LM folder whose MLM head comes from --base: give the "
                         "pretrained (MLM) model the task models were fine-tuned from as --base, or pass --heads keep")
    encs = [_encoder(p.state) for p in pres]
    density, scale = (settings[k] if settings[k] is not None else d for k, d in (("density", 0.5), ("scale", 1.0)))
    merged = merge_states(settings["method"], encs[0] if has_base else None, encs[1:] if has_base else encs,
                          settings["weights"], density, scale)
    bad = nonfinite(merged)
    if bad:
        raise MergeError(f"the merged weights are not finite ({bad}): the inputs or --weights/--scale overflow "
                         f"float32; nothing was written to {writer.out}")
    fingerprint = common_fingerprint({f"model {p}": pre.tokenizer_fingerprint for p, pre in zip(paths, pres)})
    tok_dir = next((p.tokenizer_dir for p in pres if p.tokenizer_dir), None)
    writer.tokenizer(tok_dir, fingerprint, f"model {paths[0]}", pres[0].config.vocab_size)  # before anything is written
    settings = {**settings, "heads": heads}
    if heads == "drop":
        model = FlexBertForMaskedLM(pres[0].config)
        model.load_state_dict({**mlm_model(pres[0]).state_dict(), **merged})
        model.tie_weights()
        writer.write_mlm(model, fallback=False)
        writer.record(paths, settings)
        return {**settings, "tokenizer": writer.tokenizer_dir, "out": writer.out, "tasks": {}}
    prepare_output_dir(writer.out, overwrite=writer.overwrite, inputs=writer.inputs, keep=writer.keep)
    out = {}
    for name, path, task in zip(_task_names(task_paths), task_paths, tasks):
        sub = ModelWriter("merge", os.path.join(writer.out, name), inputs=paths, keep=paths)
        model = FlexBertForSequenceClassification(task.config)
        model.load_state_dict({**task.state, **merged})
        sub.tokenizer(tok_dir, fingerprint, f"model {path}", task.config.vocab_size)
        out[name] = sub.write_classifier(model, task.label_names)
        sub.record(paths, {**settings, "head": path})
    return {**settings, "tokenizer": tok_dir, "out": writer.out, "tasks": out}
