"""Read a sweep's runs and report on them: ``results.csv``, a Markdown table and PNG plots.

Each run folder holds what its command wrote: ``metrics.jsonl`` (one record per batch, eval
metrics in the records where they were measured; train.py and finetune.py both write it) and, for
fine-tuning, ``metrics.json`` with the final validation/test metrics.  Nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

TRAIN_LOSS = "loss/train/total"
EVAL_LOSS = "metrics/eval/MLMLoss"
EVAL_ACC = "metrics/eval/MLMAccuracy"


@dataclass
class RunResult:
    name: str
    group: str
    overrides: dict[str, Any]
    status: str  # done | partial | new
    summary: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (tokens, train loss)
    eval_curve: list[tuple[float, float]] = field(default_factory=list)  # (tokens, eval loss)


def read_jsonl(path: str) -> list[dict]:
    """Records of a metrics.jsonl; a line cut by a crash is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def summarize(run_dir: str) -> tuple[dict[str, float], list, list]:
    """(summary, train curve, eval curve) of one run folder."""
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in records if TRAIN_LOSS in r]
    evals = [r for r in records if EVAL_LOSS in r]
    summary: dict[str, float] = {}
    if records:
        last = records[-1]
        summary.update(tokens=float(last.get("tokens", 0)), steps=float(last.get("batch", 0)), seconds=float(last.get("time", 0)))
    if train:
        tail = train[-max(1, len(train) // 10):]  # last 10% of steps: one step's loss is noisy
        summary["train_loss"] = statistics.fmean(r[TRAIN_LOSS] for r in tail)
    if evals:
        summary["eval_loss"] = float(evals[-1][EVAL_LOSS])
        if EVAL_ACC in evals[-1]:
            summary["eval_accuracy"] = float(evals[-1][EVAL_ACC])
    final = os.path.join(run_dir, "metrics.json")
    if os.path.exists(final):  # fine-tuning: {"validation": {...}, "test": {...}, ...}
        with open(final) as f:
            data = json.load(f)
        for split in ("validation", "test"):
            for k, v in (data.get(split) or {}).items():
                if isinstance(v, (int, float)):
                    summary[f"{split}_{k}"] = float(v)
    curve = [(float(r.get("tokens", r.get("batch", 0))), float(r[TRAIN_LOSS])) for r in train]
    eval_curve = [(float(r.get("tokens", r.get("batch", 0))), float(r[EVAL_LOSS])) for r in evals]
    return summary, curve, eval_curve


def default_metric(results: list[RunResult]) -> str:
    keys = [k for r in results for k in r.summary]
    for k in keys:
        if k.startswith("validation_"):
            return k
    return "eval_loss"


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "error" in metric


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def write_csv(results: list[RunResult], path: str) -> None:
    """One row per run: name, group, status, each override, each summary value."""
    okeys = list(dict.fromkeys(k for r in results for k in r.overrides))
    skeys = list(dict.fromkeys(k for r in results for k in r.summary))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "group", "status", *okeys, *skeys])
        for r in results:
            w.writerow([r.name, r.group, r.status, *(r.overrides.get(k, "") for k in okeys),
                        *(_fmt(r.summary[k]) if k in r.summary else "" for k in skeys)])


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


def markdown_table(results: list[RunResult], metric: str, extra: Optional[list[str]] = None) -> str:
    """One row per group: mean ± sd of ``metric`` over seeds, each seed's value, the change against
    the first group (the base), and the mean of ``extra`` columns."""
    stats = group_stats(results, metric)
    extra = [k for k in (extra or []) if any(k in r.summary for r in results) and k != metric]
    done = {r.name: r.status == "done" for r in results}
    runs_of = {}
    for r in results:
        runs_of.setdefault(r.group, []).append(r)
    head = ["variant", "runs done", f"{metric} (mean ± sd)", "per seed", "vs " + stats[0]["group"] if stats else "vs base"]
    head += [f"{k} (mean)" for k in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = stats[0]["mean"] if stats else float("nan")
    for s in stats:
        sd = "" if math.isnan(s["sd"]) else f" ± {s['sd']:.4f}"
        delta = s["mean"] - base
        members = runs_of[s["group"]]
        seeds = ", ".join(_fmt(r.summary[metric]) + ("" if done[r.name] else "*") for r in members if metric in r.summary)
        row = [s["group"], f"{sum(done[r.name] for r in members)}/{len(members)}", f"{_fmt(s['mean'])}{sd}", seeds,
               "–" if s is stats[0] or math.isnan(delta) else f"{delta:+.4f}"]
        for k in extra:
            vals = [r.summary[k] for r in results if r.group == s["group"] and k in r.summary]
            row.append(_fmt(statistics.fmean(vals)) if vals else "")
        lines.append("| " + " | ".join(row) + " |")
    better = "lower" if lower_is_better(metric) else "higher"
    lines.append(f"\n{metric}: {better} is better; sd over the group's seeds.")
    if not all(done.values()):
        lines[-1] += " * = unfinished run (its latest value)."
    return "\n".join(lines) + "\n"


def collect(sweep) -> list[RunResult]:
    """A RunResult for every run of a ``flexbert.sweep.Sweep`` (runs not started have no numbers)."""
    from flexbert.sweep import run_dir, status

    out = []
    for run in sweep.runs:
        summary, curve, eval_curve = summarize(run_dir(sweep, run))
        out.append(RunResult(run.name, run.group, dict(run.overrides), status(sweep, run), summary, curve, eval_curve))
    return out


def write_report(sweep, metric: Optional[str] = None, done_only: bool = False) -> dict[str, str]:
    """results.csv, results.md, loss_curves.png and final_metric.png in the sweep's folder
    (``done_only``: leave unfinished runs out)."""
    from flexbert.eval import plots

    everything = collect(sweep)
    results = [r for r in everything if r.status == "done" or not done_only]
    metric = metric or sweep.metric or default_metric(results)
    os.makedirs(sweep.out, exist_ok=True)
    paths = {k: os.path.join(sweep.out, k) for k in ("results.csv", "results.md", "loss_curves.png", "final_metric.png")}
    write_csv(results, paths["results.csv"])
    extra = ["eval_accuracy", "train_loss", "tokens", "seconds"] if metric == "eval_loss" else \
        sorted({k for r in results for k in r.summary if k.startswith(("validation_", "test_"))})
    done = sum(r.status == "done" for r in everything)
    with open(paths["results.md"], "w") as f:
        f.write(f"# Sweep {sweep.name}: {done}/{len(everything)} runs done\n\n")
        f.write(markdown_table(results, metric, extra))
    plots.loss_curves(results, paths["loss_curves.png"], title=sweep.name)
    plots.final_metric(results, metric, paths["final_metric.png"])
    return paths
