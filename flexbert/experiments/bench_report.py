"""The pretraining benchmark's result: curves -> speedup, a Markdown table, two PNG plots.

A leg's curve is its checkpoints as ``{"tokens", "seconds", "loss"}`` points (training seconds,
held-out loss from the one evaluator).  Per seed, the target is the baseline's (transformers') final
held-out loss; ``time_to_loss`` reads, on another leg's curve, the training seconds at which its
loss first reaches the target (linear between the checkpoints either side), and
``speedup = baseline seconds / FlexBERT seconds`` to that loss (> 1 when FlexBERT is sooner).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from importlib.metadata import version
from typing import Optional

import torch

from flexbert.experiments.plots import _pyplot  # matplotlib (Agg) is imported when a plot is drawn

NEAR = 0.05  # a curve's first or last point stands for a token count this close (a step crosses the mark)


def loss_at_tokens(points: list[dict], tokens: float) -> Optional[float]:
    """Held-out loss at ``tokens``, linear between checkpoints (None outside the curve)."""
    first, last = points[0], points[-1]
    if tokens <= first["tokens"]:
        return first["loss"] if first["tokens"] - tokens <= NEAR * tokens else None
    if tokens >= last["tokens"]:
        return last["loss"] if tokens - last["tokens"] <= NEAR * tokens else None
    for a, b in zip(points, points[1:]):
        if a["tokens"] <= tokens <= b["tokens"]:
            frac = (tokens - a["tokens"]) / max(1, b["tokens"] - a["tokens"])
            return a["loss"] + frac * (b["loss"] - a["loss"])
    return None


def time_to_loss(points: list[dict], target: float) -> Optional[dict]:
    """``{"seconds", "tokens", "upper_bound"}`` where the curve first reaches ``target``; None if never.
    Reached at the first checkpoint already: that checkpoint's time (an upper bound)."""
    for i, p in enumerate(points):
        if p["loss"] <= target:
            if i == 0:
                return {"seconds": p["seconds"], "tokens": p["tokens"], "upper_bound": True}
            a = points[i - 1]
            frac = (a["loss"] - target) / max(1e-12, a["loss"] - p["loss"])
            return {"seconds": a["seconds"] + frac * (p["seconds"] - a["seconds"]),
                    "tokens": a["tokens"] + frac * (p["tokens"] - a["tokens"]), "upper_bound": False}
    return None


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def leg_summary(points: list[dict], result: dict) -> dict:
    last = points[-1]
    return {"points": points, "tokens": last["tokens"], "train_seconds": last["seconds"],
            "tokens_per_s": last["tokens"] / last["seconds"], "final_loss": last["loss"], **result}


def summarize(curves: dict, baseline: str, marks: list[int], header: dict) -> dict:
    """``curves``: {stack: {seed: leg summary}} -> the result (per-seed and mean speedups, equal-token losses)."""
    seeds = list(curves[baseline])
    for stack, legs in curves.items():
        for seed, leg in legs.items():
            base, flex = curves[baseline][seed], curves["flexbert"][seed]
            other = flex if stack != "flexbert" else base  # the other side's final loss
            leg["to_other_final"] = time_to_loss(leg["points"], other["final_loss"])
            reached = time_to_loss(leg["points"], base["final_loss"])
            leg["to_baseline_final"] = reached
            leg["speedup"] = base["train_seconds"] / reached["seconds"] if reached else None
    result = dict(header, baseline=baseline, seeds=seeds, marks=marks, stacks={})
    for stack, legs in curves.items():
        result["stacks"][stack] = {
            "legs": {str(s): leg for s, leg in legs.items()},
            "tokens_per_s": _mean([leg["tokens_per_s"] for leg in legs.values()]),
            "final_loss": _mean([leg["final_loss"] for leg in legs.values()]),
            "speedup": _mean([leg["speedup"] for leg in legs.values()]),
            "loss_at_tokens": {str(m): _mean([loss_at_tokens(leg["points"], m) for leg in legs.values()]) for m in marks},
        }
    flex = result["stacks"]["flexbert"]
    result["speedup"] = flex["speedup"]  # transformers' seconds / FlexBERT's, to transformers' final held-out loss
    # the mean above is over the seeds where FlexBERT got there: say how many those are
    result["speedup_seeds_reached"] = sum(curves["flexbert"][s]["speedup"] is not None for s in seeds)
    result["speedup_per_seed"] = {str(s): curves["flexbert"][s]["speedup"] for s in seeds}
    result["speedup_vs"] = {stack: _mean([_versus(curves, stack, s) for s in seeds]) for stack in curves if stack != "flexbert"}
    return result


def _versus(curves: dict, stack: str, seed) -> Optional[float]:
    """That stack's seconds / FlexBERT's seconds, to that stack's final loss (same seed)."""
    other = curves[stack][seed]
    reached = time_to_loss(curves["flexbert"][seed]["points"], other["final_loss"])
    return other["train_seconds"] / reached["seconds"] if reached else None


def _fmt(value, spec: str = ".3f", none: str = "not reached") -> str:
    return none if value is None else format(value, spec)


def _ratio(value) -> str:
    """``2.54x``, or ``not reached`` (no ``x`` after it)."""
    return _fmt(value, ".2f") + ("x" if value is not None else "")


def markdown(r: dict) -> str:
    seeds, budget = r["seeds"], r["marks"][-1]
    lines = [f"Held-out MLM loss at {r['eval']['mlm_probability']:.0%} masking (seed {r['eval']['seed']}) on {r['data']}/validation; "
             f"{r['tokens']:,} tokens per leg; seeds {', '.join(map(str, seeds))}; device {r['device']}, "
             f"{r['threads']} thread(s) per leg, {r['parallel']} leg(s) at a time.", "",
             "| stack | tokens/s | peak memory (MiB) | held-out loss at the budget (per seed) | training s (per seed) "
             "| process CPU s (per seed) | s to the other's final loss (per seed) "
             "| transformers' s / this stack's s to transformers' final loss |",
             "|---|---:|---:|---|---|---|---|---:|"]
    for stack, s in r["stacks"].items():
        legs = [s["legs"][str(x)] for x in seeds]
        mem = _mean([leg.get("peak_memory_mb") or leg.get("peak_rss_mb") for leg in legs])
        to_other = ", ".join(_fmt(leg["to_other_final"] and leg["to_other_final"]["seconds"], ".0f") for leg in legs)
        lines.append(f"| {stack} | {s['tokens_per_s']:,.0f} | {_fmt(mem, ',.0f', '-')} | "
                     f"{_fmt(s['final_loss'])} ({', '.join(_fmt(leg['final_loss']) for leg in legs)}) | "
                     f"{', '.join(_fmt(leg['train_seconds'], '.0f') for leg in legs)} | "
                     f"{', '.join(_fmt(leg.get('cpu_seconds'), '.0f', '-') for leg in legs)} | {to_other} | "
                     f"**{_ratio(s['speedup'])}** ({', '.join(_fmt(leg['speedup'], '.2f') for leg in legs)}) |")
    lines += ["", f"Held-out loss at equal tokens (mean over seeds; {budget:,} = the budget):", "",
              "| tokens | " + " | ".join(r["stacks"]) + " |", "|---:|" + "---:|" * len(r["stacks"])]
    for m in r["marks"]:
        lines.append(f"| {m:,} | " + " | ".join(_fmt(s["loss_at_tokens"][str(m)], ".3f", "-") for s in r["stacks"].values()) + " |")
    lines += ["", f"speedup (transformers' seconds / FlexBERT's seconds to transformers' final held-out loss): "
              f"**{_ratio(r['speedup'])}** (mean over the {r['speedup_seeds_reached']} of {len(r['seeds'])} seeds where "
              f"FlexBERT reached it); per seed " + ", ".join(f"{k}: {_fmt(v, '.2f')}" for k, v in r["speedup_per_seed"].items()),
              f"load average during the legs: {r['load']['mean']} (min {r['load']['min']}, max {r['load']['max']}; "
              f"the legs themselves account for about {r['load']['our_threads']})"]
    return "\n".join(lines) + "\n"


def plots(r: dict, out: str) -> list[str]:
    plt = _pyplot()
    paths = []
    for x, label in (("tokens", "tokens trained"), ("seconds", "training seconds")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (stack, s) in enumerate(r["stacks"].items()):
            for j, (seed, leg) in enumerate(s["legs"].items()):
                ax.plot([p[x] for p in leg["points"]], [p["loss"] for p in leg["points"]], ["-", "--", ":", "-."][j % 4],
                        marker="o", ms=3, color=f"C{i}", label=f"{stack} seed {seed}")
        ax.set(xlabel=label, ylabel="held-out MLM loss", title=f"held-out MLM loss vs {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out, f"loss_vs_{x}.png"))
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def machine() -> dict:
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": name, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "transformers": version("transformers"), "python": platform.python_version()}


def write(r: dict, out: str) -> dict[str, str]:
    paths = {"json": os.path.join(out, "result.json"), "table": os.path.join(out, "table.md")}
    with open(paths["json"], "w") as f:
        json.dump(r, f, indent=1)
    with open(paths["table"], "w") as f:
        f.write(markdown(r))
    paths["loss_vs_tokens"], paths["loss_vs_seconds"] = plots(r, out)
    return paths
