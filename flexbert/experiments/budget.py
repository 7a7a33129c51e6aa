"""When pretraining pays: downstream scores against pretraining tokens, pretrained vs random init.

``flexbert budget`` pretrains one run per (token budget, seed) through the sweep runner
(resumable, locked, logged), then this module fine-tunes every finished run, and the same
architecture from a random init once per seed, on each task:

* ``classification``: ``flexbert finetune`` on a task folder's train/validation/test files (the
  recipe of ``make demo``'s step 7), scored by a metric of its result such as ``test_accuracy``;
* ``retrieval`` (optional): ``flexbert finetune-retrieval`` on a BEIR folder's
  ``train_pairs.jsonl``, scored by nDCG@10 on its test split after fine-tuning (step 9's recipe).

Every fine-tune's score is read through its ``result.json`` (flexbert/eval/evaluation.py), the
same way for every task.

It writes ``budget.json``, ``budget.md`` and ``budget.png``: per task the score per budget (mean and
sd over seeds), the random-init band, and where the curves cross (interpolated in log tokens).
Fine-tunes are jobs of ``flexbert/experiments/launcher.py``; one whose result is newer than its model is
skipped, so a rerun with more budgets or seeds does only what is new.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Optional

from flexbert.eval.evaluation import RESULT, read_result
from flexbert.experiments.launcher import Job, flexbert_command, run_jobs_said
from flexbert.experiments.plots import _pyplot
from flexbert.train import metric_keys as K
from flexbert.train.run_folder import RunFolder

RANDOM = "random-init_seed{}"


@dataclass
class Pretrained:
    name: str  # the pretraining run's name (its folder under the sweep's out)
    run_dir: str
    seed: int
    budget: int  # the tokens it was asked to train (max_duration); it stops at the first batch past them


@dataclass
class Task:
    name: str  # classification | retrieval: the folder under OUT holding its fine-tunes
    command: str  # a flexbert command taking --model, --seed, --out, --overwrite and --random-init
    args: list[str]  # data and recipe options of the command
    metric: str  # what is plotted, SPLIT_NAME of the fine-tune's result, e.g. test_accuracy, test_ndcg@10

    def score(self, folder: str) -> float:
        """The metric of the finished fine-tune in ``folder`` (its result.json)."""
        return read_result(folder).metric(self.metric)


def tokens_seen(run_dir: str) -> int:
    """Tokens a finished pretraining run trained on (its last metrics record)."""
    seen = [r[K.TOKENS] for r in RunFolder(run_dir).metrics() if K.TOKENS in r]
    if not seen:
        raise ValueError(f"{run_dir}: no metrics records with a token count; did the run finish?")
    return int(max(seen))


def fresh_result(done: str, model: str) -> bool:
    """Whether the result file ``done`` is newer than ``model`` (a checkpoint, or a run folder's newest one)."""
    if not os.path.exists(done):
        return False
    newest = RunFolder(model).newest_checkpoint() if os.path.isdir(model) else model
    return os.path.getmtime(done) > os.path.getmtime(newest)


def finetune_all(runs: list[Pretrained], tasks: list[Task], out: str, seeds: list[int], parallel: int = 1,
                 tag: str = "budget") -> list[str]:
    """Fine-tune every pretrained run (its own seed) and a random init per seed on every task; the failed names."""
    jobs = []
    for task in tasks:
        specs = [(r.name, r.run_dir, r.seed, []) for r in runs]
        specs += [(RANDOM.format(s), runs[0].run_dir, s, ["--random-init"]) for s in seeds]
        for name, model, seed, extra in specs:
            folder = os.path.join(out, task.name, name)
            if fresh_result(os.path.join(folder, RESULT), model):
                print(f"[{tag}] {task.name} {name}: fine-tune already done", flush=True)
                continue
            cmd = flexbert_command(task.command, "--model", model, *task.args, "--seed", str(seed), "--out", folder,
                                   "--overwrite", *extra)
            jobs.append(Job(f"{task.name}-{name}", cmd, os.path.join(out, "logs", f"{task.name}-{name}.log"),
                            os.path.join(out, "logs", f"{task.name}-{name}")))
    return run_jobs_said(jobs, parallel, tag)


def compare_inits(model: str, task: Task, out: str, seeds: list[int], parallel: int = 1, tag: str = "budget") -> dict:
    """One pretrained model against the same architecture from a random init on ``task``, each
    fine-tuned once per seed (OUT/TASK/pretrained_seedS, OUT/TASK/random-init_seedS).  Per init its
    scores (``_stats``), and ``gap`` (pretrained mean - random-init mean) against ``spread`` (the
    larger of the two inits' ranges over seeds); raises when a fine-tune failed."""
    runs = [Pretrained(f"pretrained_seed{s}", model, s, 0) for s in seeds]
    failed = finetune_all(runs, [task], out, seeds, parallel, tag)
    if failed:
        raise RuntimeError(f"fine-tunes failed: {', '.join(failed)} (logs in {os.path.join(out, 'logs')})")
    scores = {"pretrained": [task.score(os.path.join(out, task.name, r.name)) for r in runs],
              "random_init": [task.score(os.path.join(out, task.name, RANDOM.format(s))) for s in seeds]}
    result = {name: _stats(v) for name, v in scores.items()}
    result["gap"] = result["pretrained"]["mean"] - result["random_init"]["mean"]
    result["spread"] = max(max(v) - min(v) for v in scores.values())
    return result


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def collect(runs: list[Pretrained], tasks: list[Task], out: str, seeds: list[int]) -> dict:
    """Per task, the series: per token budget, the score over seeds (and the tokens the runs saw)."""
    seen = {r.name: tokens_seen(r.run_dir) for r in runs}
    result = {}
    for task in tasks:
        by_budget: dict[int, list[float]] = {}
        for r in runs:
            by_budget.setdefault(r.budget, []).append(task.score(os.path.join(out, task.name, r.name)))
        baseline = _stats([task.score(os.path.join(out, task.name, RANDOM.format(s))) for s in seeds])
        series = [dict(tokens=t, tokens_seen=max(seen[r.name] for r in runs if r.budget == t), **_stats(v))
                  for t, v in sorted(by_budget.items())]
        result[task.name] = {"metric": task.metric, "random_init": baseline, "pretrained": series,
                             "crossing_tokens": crossing(series, baseline["mean"])}
    return result


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


def summary_line(task: str, r: dict) -> str:
    base, at, last = r["random_init"]["mean"], r["crossing_tokens"], r["pretrained"][-1]
    if at is None:
        return (f"{task}: pretraining does not beat the random init ({r['metric']} {base:.3f}) within the series: "
                f"{last['mean']:.3f} after {last['tokens']:,} tokens")
    return f"{task}: the pretrained model reaches the random init's {r['metric']} ({base:.3f}) at about {at:,.0f} tokens"


def table(task: str, r: dict) -> list[str]:
    base, metric = r["random_init"], r["metric"]
    lines = [f"| {task}: pretraining tokens | {metric} (mean ± sd) | per seed | vs random init |", "|---|---|---|---|"]
    for p in r["pretrained"]:
        lines.append(f"| {p['tokens']:,} | {p['mean']:.4f} ± {p['sd']:.4f} | {', '.join(f'{v:.4f}' for v in p['values'])} "
                     f"| {p['mean'] - base['mean']:+.4f} |")
    lines.append(f"| random init | {base['mean']:.4f} ± {base['sd']:.4f} | {', '.join(f'{v:.4f}' for v in base['values'])} | – |")
    return lines + ["", summary_line(task, r) + ".", ""]


def write_report(result: dict, out: str) -> dict[str, str]:
    """budget.json, budget.md (a table and the crossing per task) and budget.png (a panel per task) in ``out``."""
    paths = {n: os.path.join(out, n) for n in ("budget.json", "budget.md", "budget.png")}
    with open(paths["budget.json"], "w") as f:
        json.dump(result, f, indent=2)
    with open(paths["budget.md"], "w") as f:
        f.write("\n".join(line for task, r in result.items() for line in table(task, r)))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(result), figsize=(6.5 * len(result), 4.5), squeeze=False)
    for ax, (task, r) in zip(axes[0], result.items()):
        base, points = r["random_init"], r["pretrained"]
        ax.errorbar([p["tokens"] for p in points], [p["mean"] for p in points], yerr=[p["sd"] for p in points],
                    marker="o", capsize=3, label="pretrained, then fine-tuned")
        ax.axhline(base["mean"], color="C1", ls="--", label="random init, fine-tuned")
        ax.axhspan(base["mean"] - base["sd"], base["mean"] + base["sd"], color="C1", alpha=0.15)
        if r["crossing_tokens"]:
            ax.axvline(r["crossing_tokens"], color="grey", ls=":", label="crossing")
        ax.set(xscale="log", xlabel="pretraining tokens", ylabel=r["metric"], title=f"{task}: {r['metric']}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(paths["budget.png"], dpi=110)
    plt.close(fig)
    return paths
