"""Checkpoint averaging: the mean of several checkpoints' model weights, written as a checkpoint.

ModernBERT-base's release averages the best annealing checkpoints with the final one.  Here:

* ``average_checkpoints(paths, out_dir)``: the fp32 mean of every floating-point model tensor
  (other tensors come from the last checkpoint); everything else in the written checkpoint
  (optimizer, clock, ...) is the last checkpoint's, so it loads with ``load_path`` like any
  checkpoint, with ``init_from`` as weights, and exports with ``flexbert export``.
  ``out_dir`` (written by flexbert/weights/writer.py) gets ``checkpoints/ba{N}.pt`` (N: the last
  checkpoint's batch), the run's ``config.yaml`` and ``flexbert_record.json`` (what was averaged).
* ``best_checkpoints(run_dir, k, metric)``: the k checkpoints with the best eval metric in the
  run's ``metrics.jsonl``, plus the final one.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from flexbert.data.fingerprint import common_fingerprint
from flexbert.train import metric_keys as K
from flexbert.train.run_folder import (
    RunFolder,
    RunFolderError,
    checkpoint_config,
    identity,
    load_checkpoint,
    progress,
    run_of_checkpoint,
)
from flexbert.weights.export import ExportError
from flexbert.weights.writer import ModelWriter


class AveragingError(ExportError):
    """One-line reason checkpoints cannot be averaged."""


def _check_same_model(paths: list[str], ckpts: list[dict]) -> None:
    first = checkpoint_config(paths[0], ckpts[0]).model
    ref = ckpts[0]["state"]["model"]
    for p, c in zip(paths[1:], ckpts[1:]):
        other = checkpoint_config(p, c).model
        if other != first:
            diff = sorted(f.name for f in dataclasses.fields(first) if getattr(first, f.name) != getattr(other, f.name))
            raise AveragingError(f"{p} has a different model config from {paths[0]} (model.{', model.'.join(diff[:4])}); "
                                 "only checkpoints of one model can be averaged")
        s = c["state"]["model"]
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


def average_checkpoints(paths: list[str], out_dir: str, overwrite: bool = False) -> str:
    """Average ``paths`` (the last one is the template) into the run folder ``out_dir``; returns the
    checkpoint path.  ``out_dir`` must not hold an input (e.g. the run averaged: a resume there would
    continue from the average); a non-empty one is replaced whole only with ``overwrite``."""
    if not paths:
        raise AveragingError("no checkpoints to average")
    writer = ModelWriter("average", out_dir, overwrite, inputs=paths)
    try:
        ckpts = [load_checkpoint(p) for p in paths]
        _check_same_model(paths, ckpts)
        cfg = checkpoint_config(paths[-1], ckpts[-1])
    except RunFolderError as e:
        raise AveragingError(str(e)) from None
    writer.keep = [r.path for r in (run_of_checkpoint(p, c) for p, c in zip(paths, ckpts)) if r is not None]
    writer.tokenizer_fingerprint = common_fingerprint({f"checkpoint {p}": identity(c).get("tokenizer") for p, c in zip(paths, ckpts)})
    writer.check()  # again, now that the checkpoints' run folders are known
    template = ckpts[-1]
    template["state"]["model"] = average_states([c["state"]["model"] for c in ckpts])
    ident = identity(template)
    if ident:  # the average's own run folder is out_dir
        ident["run_dir"] = os.path.abspath(out_dir)
    out = writer.write_checkpoint(template, cfg, progress(template)[1] or 0)
    writer.record(paths, {"method": "mean", "checkpoint": os.path.abspath(out)})
    return out


def eval_metric_by_batch(run_dir: str, metric: str) -> dict[int, float]:
    """{batch: value} of an eval metric in the run's metrics.jsonl."""
    run = RunFolder(run_dir)
    key = metric if metric.startswith(K.EVAL_PREFIX) else K.eval_key(metric)
    if not os.path.exists(run.metrics_path):
        raise AveragingError(f"{run.metrics_path} not found (the jsonl logger writes it)")
    return {int(rec[K.BATCH]): float(rec[key]) for rec in run.metrics() if key in rec}


def best_checkpoints(run_dir: str, k: int, metric: str = "MLMLoss", maximize: bool = False) -> list[str]:
    """The ``k`` best checkpoints by ``metric`` at their batch (the final one not counted), then
    the final checkpoint: k + 1 in all, oldest first."""
    run = RunFolder(run_dir)
    try:
        cfg = run.load_config()
    except RunFolderError as e:
        raise AveragingError(str(e)) from None
    ckpts = run.checkpoints(cfg)  # newest first
    if not ckpts:
        raise AveragingError(f"no checkpoints in {run.save_folder(cfg)}")
    values = eval_metric_by_batch(run_dir, metric)
    final = ckpts[0]
    scored = [(values[b], b, p) for b, p in ckpts[1:] if b in values]
    if len(scored) < k:
        raise AveragingError(f"{run_dir}: only {len(scored)} checkpoint(s) have an eval '{metric}' in metrics.jsonl, "
                             f"{k} asked for (evaluate at every save_interval)")
    scored.sort(key=lambda t: (-t[0] if maximize else t[0], t[1]))
    return [p for _, p in sorted((b, p) for _, b, p in scored[:k])] + [final[1]]
