"""Checkpoint averaging: the mean of several checkpoints' model weights, written as a checkpoint.

ModernBERT-base's release averages the best annealing checkpoints with the final one.  Here:

* ``average_checkpoints(paths, out_dir)``: the fp32 mean of every floating-point model tensor
  (other tensors come from the last checkpoint); everything else in the written checkpoint
  (optimizer, clock, ...) is the last checkpoint's, so it loads with ``load_path`` like any
  checkpoint, with ``init_from`` as weights, and exports with ``scripts/export_hf.py``.
  ``out_dir`` gets ``checkpoints/ba{N}.pt`` (N: the last checkpoint's batch), the run's
  ``config.yaml`` and ``averaged.json`` (what was averaged).
* ``best_checkpoints(run_dir, k, metric)``: the k checkpoints with the best eval metric in the
  run's ``metrics.jsonl``, plus the final one.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import torch

from flexbert.train.export import ExportError

METRIC_PREFIX = "metrics/eval/"


class AveragingError(ExportError):
    """One-line reason checkpoints cannot be averaged."""


def _config_path(checkpoint: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.yaml")


def _model_section(checkpoint: str) -> Optional[dict]:
    import yaml

    path = _config_path(checkpoint)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return (yaml.safe_load(f) or {}).get("model")


def _check_same_config(paths: list[str], states: list[dict]) -> None:
    first = _model_section(paths[0])
    for p, s in zip(paths[1:], states[1:]):
        other = _model_section(p)
        if first is not None and other is not None and other != first:
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise AveragingError(f"{p} has a different model config from {paths[0]} (model.{', model.'.join(diff[:4])}); "
                                 "only checkpoints of one model can be averaged")
        ref = states[0]
        if set(s) != set(ref) or any(s[k].shape != ref[k].shape for k in ref):
            raise AveragingError(f"{p} has different model weights (names or shapes) from {paths[0]}")


def average_states(states: list[dict]) -> dict:
    """fp32 mean of the floating-point tensors; the rest from the last state; dtypes kept."""
    out = {}
    for k, last in states[-1].items():
        if torch.is_floating_point(last):
            acc = torch.zeros(last.shape, dtype=torch.float32)
            for s in states:
                acc += s[k].to(torch.float32)
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def average_checkpoints(paths: list[str], out_dir: str) -> str:
    """Average ``paths`` (the last one is the template) into ``out_dir``; returns the checkpoint path."""
    from flexbert.train.checkpointing import checkpoint_problem

    if not paths:
        raise AveragingError("no checkpoints to average")
    for p in paths:
        problem = checkpoint_problem(p, full_check=False)
        if problem is not None:
            raise AveragingError(f"cannot read checkpoint {p}: {problem}")
    full = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    try:
        states = [f["state"]["model"] for f in full]
    except (KeyError, TypeError):
        raise AveragingError("not a FlexBERT/Composer checkpoint (no state.model) among the inputs") from None
    _check_same_config(paths, states)
    template = full[-1]
    template["state"]["model"] = average_states(states)
    batch = int(template["state"].get("timestamp", {}).get("Timestamp", {}).get("batch", 0))
    folder = os.path.join(out_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, f"ba{batch}.pt")
    torch.save(template, out + ".tmp")
    os.replace(out + ".tmp", out)
    if os.path.exists(_config_path(paths[-1])):
        shutil.copyfile(_config_path(paths[-1]), os.path.join(out_dir, "config.yaml"))
    with open(os.path.join(out_dir, "averaged.json"), "w") as f:
        json.dump({"checkpoints": [os.path.abspath(p) for p in paths], "output": os.path.abspath(out)}, f, indent=1)
    return out


def eval_metric_by_batch(run_dir: str, metric: str) -> dict[int, float]:
    key = metric if metric.startswith(METRIC_PREFIX) else METRIC_PREFIX + metric
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise AveragingError(f"{path} not found (the jsonl logger writes it)")
    found: dict[int, float] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if key in rec:
                    found[int(rec["batch"])] = float(rec[key])
    return found


def best_checkpoints(run_dir: str, k: int, metric: str = "MLMLoss", maximize: bool = False) -> list[str]:
    """The ``k`` best checkpoints by ``metric`` at their batch (the final one not counted), then
    the final checkpoint: k + 1 in all, oldest first."""
    from flexbert.train.checkpointing import list_checkpoints

    ckpts = list_checkpoints(os.path.join(run_dir, "checkpoints"))  # newest first
    if not ckpts:
        raise AveragingError(f"no checkpoints in {os.path.join(run_dir, 'checkpoints')}")
    values = eval_metric_by_batch(run_dir, metric)
    final = ckpts[0]
    scored = [(values[b], b, p) for b, p in ckpts[1:] if b in values]
    if len(scored) < k:
        raise AveragingError(f"{run_dir}: only {len(scored)} checkpoint(s) have an eval '{metric}' in metrics.jsonl, "
                             f"{k} asked for (evaluate at every save_interval)")
    scored.sort(key=lambda t: (-t[0] if maximize else t[0], t[1]))
    return [p for _, p in sorted((b, p) for _, b, p in scored[:k])] + [final[1]]
