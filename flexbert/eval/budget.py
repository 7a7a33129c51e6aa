"""When pretraining pays: a downstream score against pretraining tokens, pretrained vs random init.

``scripts/pretraining_budget.py`` pretrains one run per (token budget, seed) through the sweep
runner (resumable, locked, logged), then this module fine-tunes every finished run on one task
file set with ``scripts/finetune.py`` (the same recipe as ``make demo``'s step 7) and the same
architecture from a random init once per seed, reads each fine-tune's ``metrics.json`` and writes
``budget.json``, ``budget.md`` and ``budget.png``: the score per budget (mean and sd over seeds),
the random-init band, and where the curves cross (interpolated in log tokens).  Fine-tunes are
jobs of ``flexbert/train/jobs.py``; one whose ``metrics.json`` is newer than its model is skipped.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Pretrained:
    name: str  # the pretraining run's name (its folder under the sweep's out)
    run_dir: str
    seed: int


def tokens_seen(run_dir: str) -> int:
    """Tokens a finished pretraining run trained on (its last metrics record)."""
    from flexbert.train import metric_keys as K
    from flexbert.train.run_folder import RunFolder

    seen = [r[K.TOKENS] for r in RunFolder(run_dir).metrics() if K.TOKENS in r]
    if not seen:
        raise ValueError(f"{run_dir}: no metrics records with a token count; did the run finish?")
    return int(max(seen))


def _fresh(out: str, model: str) -> bool:
    done = os.path.join(out, "metrics.json")
    if not os.path.exists(done):
        return False
    from flexbert.train.run_folder import RunFolder

    newest = RunFolder(model).newest_checkpoint() if os.path.isdir(model) else model
    return os.path.getmtime(done) > os.path.getmtime(newest)


def finetune_all(runs: list[Pretrained], task_args: list[str], out: str, seeds: list[int], parallel: int = 1) -> list[str]:
    """Fine-tune every pretrained run (its own seed) and a random init per seed; the failed names."""
    from flexbert.train.jobs import Job, run_jobs

    specs = [(f"{r.name}", r.run_dir, r.seed, []) for r in runs]
    specs += [(f"random-init_seed{s}", runs[0].run_dir, s, ["--random-init"]) for s in seeds]
    jobs = []
    for name, model, seed, extra in specs:
        folder = os.path.join(out, "finetune", name)
        if _fresh(folder, model):
            print(f"[budget] {name}: fine-tune already done", flush=True)
            continue
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "finetune.py"), "--model", model, *task_args,
               "--seed", str(seed), "--out", folder, "--overwrite", *extra]
        jobs.append(Job(name, cmd, os.path.join(out, "logs", f"finetune-{name}.log"), os.path.join(out, "logs", name)))
    return run_jobs(jobs, parallel, echo=lambda m: print(m, flush=True))


def score(folder: str, metric: str) -> float:
    """``split_name`` (e.g. ``test_accuracy``) from a fine-tune's metrics.json."""
    split, _, name = metric.partition("_")
    with open(os.path.join(folder, "metrics.json")) as f:
        result = json.load(f)
    if split not in result or name not in result[split]:
        raise ValueError(f"{folder}/metrics.json: no {split} {name} (metric {metric!r})")
    return float(result[split][name])


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def collect(runs: list[Pretrained], out: str, seeds: list[int], metric: str) -> dict:
    """The series: per token budget (the tokens the runs saw), the fine-tuned score over seeds."""
    by_tokens: dict[int, list[float]] = {}
    for r in runs:
        by_tokens.setdefault(tokens_seen(r.run_dir), []).append(score(os.path.join(out, "finetune", r.name), metric))
    baseline = _stats([score(os.path.join(out, "finetune", f"random-init_seed{s}"), metric) for s in seeds])
    series = [dict(tokens=t, **_stats(v)) for t, v in sorted(by_tokens.items())]
    return {"metric": metric, "random_init": baseline, "pretrained": series,
            "crossing_tokens": crossing(series, baseline["mean"])}


def crossing(series: list[dict], baseline: float) -> Optional[float]:
    """Tokens where the pretrained mean first reaches the random-init mean, interpolated in log
    tokens between the budgets either side (the first budget if it already wins; None if none does)."""
    for i, point in enumerate(series):
        if point["mean"] >= baseline:
            if i == 0:
                return float(point["tokens"])
            a, b = series[i - 1], point
            frac = (baseline - a["mean"]) / (b["mean"] - a["mean"])
            return math.exp(math.log(a["tokens"]) + frac * (math.log(b["tokens"]) - math.log(a["tokens"])))
    return None


def summary_line(result: dict) -> str:
    base, at = result["random_init"]["mean"], result["crossing_tokens"]
    last = result["pretrained"][-1]
    if at is None:
        return (f"pretraining does not beat the random init ({result['metric']} {base:.3f}) within the series: "
                f"{last['mean']:.3f} after {last['tokens']:,} tokens")
    return f"the pretrained model reaches the random init's {result['metric']} ({base:.3f}) at about {at:,.0f} tokens"


def write_report(result: dict, out: str) -> dict[str, str]:
    """budget.json, budget.md (table + the crossing) and budget.png in ``out``."""
    from flexbert.eval.plots import _pyplot

    paths = {n: os.path.join(out, n) for n in ("budget.json", "budget.md", "budget.png")}
    with open(paths["budget.json"], "w") as f:
        json.dump(result, f, indent=2)
    base, metric = result["random_init"], result["metric"]
    lines = [f"| pretraining tokens | {metric} (mean ± sd) | per seed | vs random init |", "|---|---|---|---|"]
    for p in result["pretrained"]:
        lines.append(f"| {p['tokens']:,} | {p['mean']:.4f} ± {p['sd']:.4f} | {', '.join(f'{v:.4f}' for v in p['values'])} "
                     f"| {p['mean'] - base['mean']:+.4f} |")
    lines.append(f"| random init | {base['mean']:.4f} ± {base['sd']:.4f} | {', '.join(f'{v:.4f}' for v in base['values'])} | – |")
    with open(paths["budget.md"], "w") as f:
        f.write("\n".join(lines) + f"\n\n{summary_line(result)}.\n")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["tokens"] for p in result["pretrained"]]
    ax.errorbar(xs, [p["mean"] for p in result["pretrained"]], yerr=[p["sd"] for p in result["pretrained"]],
                marker="o", capsize=3, label="pretrained, then fine-tuned")
    ax.axhline(base["mean"], color="C1", ls="--", label="random init, fine-tuned")
    ax.axhspan(base["mean"] - base["sd"], base["mean"] + base["sd"], color="C1", alpha=0.15)
    if result["crossing_tokens"]:
        ax.axvline(result["crossing_tokens"], color="grey", ls=":", label="crossing")
    ax.set(xscale="log", xlabel="pretraining tokens", ylabel=metric, title=f"{metric} against pretraining budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["budget.png"], dpi=110)
    plt.close(fig)
    return paths
