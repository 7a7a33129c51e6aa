"""``make gpu-report``: measure FlexBERT on the GPU at hand and write docs/benchmarks-gpu.md.

The plan (``plan()``) is a list of shell steps, each run under ``timeout``: install the missing
wheels from wheelhouse/, build the 50,368-token tokenizer, write synthetic shards at 1024 and
8192 tokens, run the GPU tests, train through the real ``train.py`` (base at 1024 under each
compile mode and several microbatches, the context-extension config at 8192, large at 1024), then
scripts/bench_model.py against transformers.  A failing step is recorded as such and the rest go
on; a step the time budget cannot reach is recorded as not run.  Each training run's
steady-state tokens/s, MFU and peak memory are read from its metrics.jsonl (``summarize``) and
rendered into the report between two markers, leaving the rest of the page as it is; the report
is rewritten after every step, so a run cut short (a lease ending) keeps everything it measured.
scripts/gpu_report.py is the command line.  A harness of shell steps, not library code: it lives
with the scripts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from typing import Optional

BEGIN, END = "<!-- gpu-report:begin -->", "<!-- gpu-report:end -->"
GLOBAL_BATCH = 192  # sequences per step at 1024 (as in the earlier H100 runs, facts §6)


@dataclass
class Step:
    name: str
    cmd: str  # one shell command line
    timeout_s: int
    kind: str = "setup"  # setup | tests | train | bench
    meta: dict = field(default_factory=dict)  # train: config, compile, microbatch, row_tokens, run_dir
    status: str = "not run"
    output_tail: str = ""
    result: dict = field(default_factory=dict)


@dataclass
class Options:
    work: str  # scratch folder: tokenizer, shards, runs, logs
    device: str = "gpu"  # gpu | cpu (cpu: the smoke plan, for tests)
    smoke: bool = False
    steps: int = 20  # optimizer steps per training run
    tokenizer: Optional[str] = None  # an existing tokenizer folder instead of building one
    tiktoken: Optional[str] = None  # gpt2.tiktoken for the 50,368-token tokenizer
    wheelhouse: Optional[str] = None
    python: str = sys.executable
    repo: str = "."


# (label, config, compile, microbatch, max_seq_len)
FULL_RUNS = [  # most telling first: a run the time budget cannot reach is reported as not run
    ("base", "configs/base.yaml", "none", 48, 1024),  # as shipped
    ("base", "configs/base.yaml", "model", 48, 1024),
    ("base-context-extension", "configs/base-context-extension.yaml", "blocks", 9, 8192),
    ("base", "configs/base.yaml", "blocks", 48, 1024),
    ("large", "configs/large.yaml", "blocks", 28, 1024),
    ("base", "configs/base.yaml", "blocks", 64, 1024),
    ("base", "configs/base.yaml", "blocks", 32, 1024),
]
SMOKE_RUNS = [("tiny", "configs/tiny.yaml", "none", 4, 128)]


def _py(o: Options, script: str, *args: str) -> str:
    return " ".join([shlex.quote(o.python), shlex.quote(os.path.join(o.repo, script)), *map(shlex.quote, args)])


def train_overrides(o: Options, run_dir: str, shards: str, compile: str, mb: int, seq: int) -> list[str]:
    """What a benchmark run changes in a shipped config: data, a short fixed duration, one
    global batch without warmup, no eval, no checkpoints, no prior weights."""
    rows = max(1, (GLOBAL_BATCH * 1024 // seq) // mb) if not o.smoke else 2
    return [
        f"data.local={shards}", f"data.max_seq_len={seq}", f"data.microbatch_size={mb}",
        f"data.global_batch_size={rows * mb}", "data.batch_size_warmup_min=0", "data.batch_size_warmup_tokens=0",
        "data.eval_split=null", f"data.num_workers={0 if o.smoke else 4}", f"compile={compile}",
        f"run_dir={run_dir}", "save_folder=''", "autoresume=false", "init_from=null", "load_path=null",
        "reset_time=false", f"max_duration={o.steps}ba", "loggers.wandb=false", "loggers.console_interval=5",
        "callbacks.throughput_window=5", f"device={o.device}",
    ]


def _setup_steps(o: Options) -> tuple[list[Step], str]:
    py, work = shlex.quote(o.python), o.work
    steps: list[Step] = []
    if o.device == "gpu" and o.wheelhouse and os.path.isdir(o.wheelhouse):  # never into a CPU dev venv
        steps.append(Step("install wheels", f"{py} {shlex.quote(os.path.join(o.repo, 'scripts', 'gpu_env.py'))} install "
                          f"{shlex.quote(o.wheelhouse)}", 300))
    tok = o.tokenizer or os.path.join(work, "tokenizer")
    if not o.tokenizer:
        args = ["modernbert", "--out", tok, "--overwrite"] + (["--tiktoken", o.tiktoken] if o.tiktoken else [])
        steps.append(Step("tokenizer (50,368 ids)", _py(o, "data_prep/train_tokenizer.py", *args), 120))
    return steps, tok


def _shards_step(o: Options, tok: str, seq: int) -> Step:
    tokens = "100k" if o.smoke else "6M"  # > 20 steps of 196,608 tokens: every run reads fresh data
    return Step(f"synthetic shards at {seq}", _py(o, "data_prep/synthetic_shards.py", "--tokenizer", tok, "--out",
                os.path.join(o.work, f"shards{seq}"), "--max-seq-len", str(seq), "--tokens", tokens, "--overwrite"), 300)


def _train_step(o: Options, run: tuple) -> Step:
    label, config, compile, mb, seq = run
    name = f"{label}-{compile}-mb{mb}"
    run_dir = os.path.join(o.work, "runs", name)
    over = train_overrides(o, run_dir, os.path.join(o.work, f"shards{seq}"), compile, mb, seq)
    meta = {"config": config, "compile": compile, "microbatch": mb, "row_tokens": mb * seq, "run_dir": run_dir}
    return Step(f"train {name}", _py(o, "train.py", os.path.join(o.repo, config), *over), 90 if o.smoke else 240, "train", meta)


def _bench_steps(o: Options) -> list[Step]:
    if o.smoke:  # the harness's test on CPU: the inference benchmark at toy sizes
        return [Step("bench_inference vs transformers", _py(o, "scripts/bench_inference.py", "--docs", "4", "--long-docs", "1",
                                                            "--length-divisor", "32", "--repeats", "1"), 120, "bench")]
    return [Step("bench_inference vs transformers", _py(o, "scripts/bench_inference.py", "--device", "cuda", "--dtype", "bf16",
                                                        "--config", "base", "--docs", "2048", "--long-docs", "128"), 180, "bench"),
            Step("bench_model vs transformers",
                 _py(o, "scripts/bench_model.py", "--device", "cuda", "--dtype", "bf16", "--config", "base"), 180, "bench")]


def plan(o: Options) -> list[Step]:
    """Ordered by what each step tells, for a short lease: setup, the GPU tests, base.yaml as
    shipped and compiled, the inference and forward+backward benchmarks, then context extension,
    large and the microbatch sweep.  A step the time budget cannot reach is reported as not run."""
    steps, tok = _setup_steps(o)
    runs = SMOKE_RUNS if o.smoke else FULL_RUNS
    steps.append(_shards_step(o, tok, runs[0][4]))
    if not o.smoke:
        steps.append(Step("GPU tests", f"{shlex.quote(o.python)} -m pytest -q -m gpu "
                          f"{shlex.quote(os.path.join(o.repo, 'tests'))}", 150, "tests"))
    first = 1 if o.smoke else 3  # base.yaml as shipped, compiled, context extension; then the benchmarks
    have = {runs[0][4]}
    for i, r in enumerate(runs):
        if i == first:
            steps += _bench_steps(o)
        if r[4] not in have:
            steps.append(_shards_step(o, tok, r[4]))
            have.add(r[4])
        steps.append(_train_step(o, r))
    if first >= len(runs):
        steps += _bench_steps(o)
    return steps


# --------------------------------------------------------------------------- results
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


NOT_RUN = "not run (time budget spent)"


def run_steps(steps: list[Step], budget_s: float, log_dir: str, echo=print, after_step=None) -> None:
    """Run each step under ``timeout`` (its limit: its own, or what is left of the budget); record
    status, output tail and train results; ``after_step(steps)`` after each one (the report is
    rewritten then, so a run cut short keeps what it measured)."""
    import subprocess
    import time

    os.makedirs(log_dir, exist_ok=True)
    t0 = time.monotonic()
    for i, s in enumerate(steps):
        left = budget_s - (time.monotonic() - t0)
        limit = int(min(s.timeout_s, left))
        if limit < 10:
            s.status = NOT_RUN
            echo(f"[gpu-report] {s.name}: {s.status}")
            if after_step is not None:
                after_step(steps)
            continue
        echo(f"[gpu-report] {s.name} (<= {limit}s): {s.cmd}")
        start = time.monotonic()
        p = subprocess.run(["timeout", "-k", "10", str(limit), "bash", "-c", s.cmd], capture_output=True, text=True)
        out = p.stdout + p.stderr
        with open(os.path.join(log_dir, f"{i:02d}.log"), "w") as f:
            f.write(f"$ {s.cmd}\n{out}")
        s.status, s.output_tail = classify(p.returncode, out), "\n".join(out.strip().splitlines()[-15:])
        s.result["seconds"] = round(time.monotonic() - start)
        metrics = os.path.join(s.meta.get("run_dir", ""), "metrics.jsonl")
        if s.kind == "train" and os.path.isfile(metrics):
            s.result.update(summarize(metrics))
        echo(f"[gpu-report] {s.name}: {s.status} ({s.result['seconds']}s)")
        if after_step is not None:
            after_step(steps)
