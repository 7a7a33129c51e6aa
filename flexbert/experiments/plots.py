"""A sweep's PNG plots (matplotlib, Agg backend: no display needed).

* ``loss_curves``: train loss (smoothed) and eval loss of every run against tokens, one colour per
  group (variant), one line style per seed;
* ``final_metric``: the headline metric per group, each seed a dot, the mean a bar with the
  min-max spread;
* ``niah_heatmap``: a needle-in-a-haystack table (flexbert/eval/niah.py) as accuracy by input
  length (rows) and needle depth (columns).
"""

from __future__ import annotations

from flexbert.experiments.results import RunResult, group_stats, lower_is_better


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _styles(results: list[RunResult]):
    groups = list(dict.fromkeys(r.group for r in results))
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    seen: dict[str, int] = {}
    dashes = ["-", "--", ":", "-."]
    out = {}
    for r in results:
        k = seen.get(r.group, 0)
        seen[r.group] = k + 1
        out[r.name] = (colours[r.group], dashes[k % len(dashes)])
    return out


def loss_curves(results: list[RunResult], path: str, title: str = "") -> None:
    plt = _pyplot()
    with_eval = any(r.eval_curve for r in results)
    fig, axes = plt.subplots(1, 2 if with_eval else 1, figsize=(12 if with_eval else 7, 4.5), squeeze=False)
    style = _styles(results)
    ax = axes[0][0]
    for r in results:
        if not r.curve:
            continue
        xs, ys = zip(*r.curve)
        colour, dash = style[r.name]
        ax.plot(xs, smooth(list(ys), max(1, len(ys) // 25)), dash, color=colour, lw=1.2, label=r.name)
    ax.set(xlabel="tokens", ylabel="train loss (moving average)", title="train loss")
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    if with_eval:
        ax = axes[0][1]
        for r in results:
            if r.eval_curve:
                xs, ys = zip(*r.eval_curve)
                colour, dash = style[r.name]
                ax.plot(xs, ys, dash, marker="o", ms=3, color=colour, lw=1.2, label=r.name)
        ax.set(xlabel="tokens", ylabel="eval loss", title="eval loss (held-out split)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def final_metric(results: list[RunResult], metric: str, path: str, title: str = "") -> None:
    plt = _pyplot()
    stats = group_stats(results, metric)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(stats) + 2), 4))
    for i, s in enumerate(stats):
        if not s["values"]:
            continue
        colour = f"C{i % 10}"
        ax.bar(i, s["mean"], width=0.6, color=colour, alpha=0.35)
        ax.errorbar(i, s["mean"], yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]], color="k", capsize=5, lw=1)
        ax.plot([i] * len(s["values"]), s["values"], "o", color=colour, ms=6)
    values = [v for s in stats for v in s["values"]]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.6 or abs(hi) * 0.02 or 0.1
        ax.set_ylim(lo - pad, hi + pad)  # the bars start above 0: differences are small
    ax.set_xticks(range(len(stats)), [s["group"] for s in stats], rotation=20, ha="right")
    better = "lower" if lower_is_better(metric) else "higher"
    ax.set(ylabel=metric, title=title or f"final {metric} per variant ({better} is better; dots = seeds, bar = min-max)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def niah_heatmap(rows: list[dict], path: str, title: str = "") -> None:
    """``rows`` (length, depth, accuracy per cell) as a heatmap PNG, each cell's accuracy written in it."""
    plt = _pyplot()
    lengths, depths = sorted({r["length"] for r in rows}), sorted({r["depth"] for r in rows})
    grid = [[next(r["accuracy"] for r in rows if r["length"] == n and r["depth"] == d) for d in depths] for n in lengths]
    fig, ax = plt.subplots(figsize=(1.0 * len(depths) + 3, 0.6 * len(lengths) + 2))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", origin="lower")
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(lengths)), [f"{n:,}" for n in lengths])
    ax.set(xlabel="needle depth (0: start of the input, 1: next to the question)", ylabel="input length (tokens)",
           title=title or "needle in a haystack: value tokens filled in (top-1 accuracy)")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"

