"""What a finished (or running) run folder says, summed up for comparison: the final and tail
metrics of a pretraining run (its ``metrics.jsonl``, read through the run folder) or a fine-tuning
run (its ``result.json``: flexbert/eval/evaluation.py), per run and per group of seeds.  The sweep
report and the plots read these."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from flexbert.eval.evaluation import RESULT, read_result
from flexbert.train import metric_keys as K
from flexbert.train.run_folder import RunFolder


@dataclass
class RunResult:
    name: str
    group: str
    overrides: dict[str, Any]
    status: str  # done | partial | new
    summary: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (tokens, train loss)
    eval_curve: list[tuple[float, float]] = field(default_factory=list)  # (tokens, eval loss)


def summarize(run_dir: str) -> tuple[dict[str, float], list, list]:
    """(summary, train curve, eval curve) of one run folder."""
    records = RunFolder(run_dir).metrics()
    train = [r for r in records if K.TRAIN_LOSS in r]
    evals = [r for r in records if K.EVAL_LOSS in r]
    summary: dict[str, float] = {}
    if records:
        last = records[-1]
        summary.update(tokens=float(last.get(K.TOKENS, 0)), steps=float(last.get(K.BATCH, 0)), seconds=float(last.get(K.TIME, 0)))
    if train:
        tail = train[-max(1, len(train) // 10):]  # last 10% of steps: one step's loss is noisy
        summary["train_loss"] = statistics.fmean(r[K.TRAIN_LOSS] for r in tail)
    if evals:
        summary["eval_loss"] = float(evals[-1][K.EVAL_LOSS])
        if K.EVAL_ACCURACY in evals[-1]:
            summary["eval_accuracy"] = float(evals[-1][K.EVAL_ACCURACY])
    if os.path.exists(os.path.join(run_dir, RESULT)):  # an evaluation (fine-tuning): SPLIT_NAME per metric
        for split, values in read_result(run_dir).metrics.items():
            summary.update({f"{split}_{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))})
    curve = [(float(r.get(K.TOKENS, r.get(K.BATCH, 0))), float(r[K.TRAIN_LOSS])) for r in train]
    eval_curve = [(float(r.get(K.TOKENS, r.get(K.BATCH, 0))), float(r[K.EVAL_LOSS])) for r in evals]
    return summary, curve, eval_curve


def default_metric(results: list[RunResult]) -> str:
    keys = [k for r in results for k in r.summary]
    for k in keys:
        if k.startswith("validation_"):
            return k
    return "eval_loss"


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "error" in metric


def group_stats(results: list[RunResult], metric: str) -> list[dict]:
    """Per group (file order): values of ``metric`` over its runs, mean, sd, min, max."""
    groups: dict[str, list[float]] = {}
    for r in results:
        groups.setdefault(r.group, [])
        if metric in r.summary:
            groups[r.group].append(r.summary[metric])
    out = []
    for g, vals in groups.items():
        out.append({"group": g, "values": vals, "mean": statistics.fmean(vals) if vals else float("nan"),
                    "sd": statistics.stdev(vals) if len(vals) > 1 else float("nan"),
                    "min": min(vals) if vals else float("nan"), "max": max(vals) if vals else float("nan")})
    return out


def results_of(runs: list[tuple[str, str, dict, str, str]]) -> list[RunResult]:
    """RunResults of (name, group, overrides, status, run folder) tuples (a run not started has no numbers)."""
    return [RunResult(name, group, dict(overrides), status, *summarize(folder)) for name, group, overrides, status, folder in runs]
