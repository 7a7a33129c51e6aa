"""Report on a set of runs: ``results.csv``, a Markdown table and PNG plots, from the runs'
summaries (flexbert/experiments/results.py).  The sweep (flexbert/experiments/sweep.py) collects its runs and calls
``write_report``."""

from __future__ import annotations

import csv
import math
import os
import statistics
from typing import Any, Optional

from flexbert.experiments import plots
from flexbert.experiments.results import RunResult, default_metric, group_stats, lower_is_better


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


def write_report(everything: list[RunResult], out: str, title: str, metric: Optional[str] = None,
                 done_only: bool = False) -> dict[str, str]:
    """results.csv, results.md, loss_curves.png and final_metric.png in ``out`` (``done_only``:
    unfinished runs left out)."""
    results = [r for r in everything if r.status == "done" or not done_only]
    metric = metric or default_metric(results)
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, k) for k in ("results.csv", "results.md", "loss_curves.png", "final_metric.png")}
    write_csv(results, paths["results.csv"])
    extra = ["eval_accuracy", "train_loss", "tokens", "seconds"] if metric == "eval_loss" else \
        sorted({k for r in results for k in r.summary if k.startswith(("validation_", "test_"))})
    done = sum(r.status == "done" for r in everything)
    with open(paths["results.md"], "w") as f:
        f.write(f"# Sweep {title}: {done}/{len(everything)} runs done\n\n")
        f.write(markdown_table(results, metric, extra))
    plots.loss_curves(results, paths["loss_curves.png"], title=title)
    plots.final_metric(results, metric, paths["final_metric.png"])
    return paths
