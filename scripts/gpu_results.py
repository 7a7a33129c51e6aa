"""The results side of ``make gpu-report`` (scripts/gpu_harness.py runs the steps): a training
run's steady state from its metrics.jsonl, a failed step's one-line cause, the inference rows of
scripts/bench_inference.py (read from its JSON, which it rewrites after every set, so a step cut
short still gives the sets it finished), and the Markdown section of docs/benchmarks-gpu.md
between two markers, the rest of the page kept as it is."""

from __future__ import annotations

import json
import os
import re
import statistics
from typing import Optional

BEGIN, END = "<!-- gpu-report:begin -->", "<!-- gpu-report:end -->"
GLOBAL_BATCH = 192  # sequences per step at 1024 (as in the earlier H100 runs, facts §6)
NOT_RUN = "not run (time budget spent)"


def summarize(metrics_path: str, skip: Optional[int] = None) -> dict:
    """Steady state of a run's metrics.jsonl: median tokens/s and MFU over the train records after
    the first ``skip`` (default a third, at least 3: compilation and warm-up), max memory."""
    recs = []
    with open(metrics_path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if r.get("kind") in ("train", "final") and "throughput/tokens_per_sec" in r:
                    recs.append(r)
    if not recs:
        return {}
    skip = max(3, len(recs) // 3) if skip is None else skip
    steady = recs[skip:] or recs[-1:]
    out = {"steps": len(recs), "tokens_per_s": statistics.median(r["throughput/tokens_per_sec"] for r in steady)}
    mfu = [r["throughput/mfu"] for r in steady if "throughput/mfu" in r]
    if mfu:
        out["mfu"] = statistics.median(mfu)
    mem = [r["memory/max_allocated_gb"] for r in recs if "memory/max_allocated_gb" in r]
    if mem:
        out["peak_gib"] = max(mem)
    return out


def classify(rc: int, output: str) -> str:
    if rc == 0:
        return "ok"
    if rc in (124, 137):
        return "timeout"
    if re.search(r"OutOfMemoryError|CUDA out of memory", output):
        m = re.search(r"Tried to allocate ([\d.]+ [GM]iB)", output)
        return "OOM" + (f" ({m.group(1)} request)" if m else "")
    last = [ln for ln in output.strip().splitlines() if ln.strip()][-1:] or [""]
    return f"failed (rc {rc}: {last[0][:120]})"


def _fmt_tok(x: float) -> str:
    return f"{x:.0f}" if x < 1e4 else f"{x / 1e3:.0f}K" if x < 1e6 else f"{x / 1e6:.2f}M"


def render(steps: list[Step], env: dict, command: str) -> str:
    """The measured section of docs/benchmarks-gpu.md."""
    lines = [f"## Measured by `{command}`", "",
             f"Device: {env.get('device', '?')}, driver {env.get('driver', '?')}, CUDA {env.get('cuda', '?')}; "
             f"torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}, composer "
             f"{env.get('mosaicml', '?')}, streaming {env.get('mosaicml-streaming', '?')}, Python {env.get('python', '?')}. "
             f"Date: {env.get('date', '?')}. Command: `{command}`.", "",
             "Training through `train.py` on synthetic documents (data_prep/synthetic_shards.py: lognormal lengths, "
             f"median 460, chunked at the row's sequence length), {GLOBAL_BATCH} x 1024 tokens per step (the same "
             "token count at 8192), bf16, StableAdamW, data loading included; tokens/s and MFU are the median over the "
             "steps after the first third (compilation, warm-up), peak memory is `memory/max_allocated_gb` (GiB).", "",
             "| run | compile | microbatch (row tokens) | tokens/s | MFU | peak memory | status |",
             "|---|---|---|---:|---:|---:|---|"]
    for s in steps:
        if s.kind != "train":
            continue
        m, r = s.meta, s.result
        tok = _fmt_tok(r["tokens_per_s"]) if "tokens_per_s" in r else ""
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
        mem = f"{r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
        lines.append(f"| {m['config']} | {m['compile']} | {m['microbatch']} ({m['row_tokens']:,}) | {tok} | {mfu} | {mem} | {s.status} |")
    lines += inference_table(steps)
    for s in steps:
        if s.kind in ("tests", "bench"):
            lines += ["", f"**{s.name}** ({s.status}):", "", "```text", s.output_tail.strip() or "(no output)", "```"]
    lines += ["", "Steps:", "", "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s.name} | {s.status} | {s.result.get('seconds', '')} |" for s in steps]
    return "\n".join(lines) + "\n"


def write_report(path: str, section: str) -> None:
    """Put ``section`` between the markers of ``path`` (kept text outside them), creating it if needed."""
    block = f"{BEGIN}\n{section}{END}\n"
    text = open(path).read() if os.path.exists(path) else "# GPU benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def inference_rows(path: str) -> list[dict]:
    """The sets scripts/bench_inference.py finished, from its ``--json`` file ([] if absent or unreadable)."""
    try:
        with open(path) as f:
            return list(json.load(f)["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def inference_table(steps: list) -> list[str]:
    """One row per set of each inference step: its figures, or why there are none."""
    lines: list[str] = []
    for s in steps:
        if "sets" not in s.meta:
            continue
        done = {r["set"]: r for r in s.result.get("rows", [])}
        lines += ["", f"**{s.name}** (tokens/s of real tokens; ratio = FlexBERT / transformers):", "",
                  "| set | documents | tokens | FlexBERT tokens/s | transformers tokens/s | ratio | status |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name in s.meta["sets"]:
            r = done.get(name)
            if r is None:
                why = s.status if s.status.startswith("not run") else f"not run (step {s.status})"
                lines.append(f"| {name} | | | | | | {why} |")
            else:
                lines.append(f"| {name} | {r['docs']:,} | {r['tokens']:,} | {_fmt_tok(r['flexbert_tokens_per_s'])} | "
                             f"{_fmt_tok(r['transformers_tokens_per_s'])} | {r['ratio']:.2f}x | ok |")
    return lines
