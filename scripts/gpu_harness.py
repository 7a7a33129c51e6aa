"""``make gpu-report``: measure FlexBERT on the GPU at hand and write docs/benchmarks-gpu.md.

The plan (``plan()``) is a list of shell steps, each run under ``timeout``: install the missing
wheels from wheelhouse/, build the 50,368-token tokenizer, write synthetic shards at 1024 and
8192 tokens, run the GPU tests, train through the real ``train.py`` (base at 1024 under each
compile mode and several microbatches, the context-extension config at 8192, large at 1024), the
inference benchmark (scripts/bench_inference.py), scripts/bench_model.py against transformers and
scripts/bench_pretraining.py (time to the same held-out loss against transformers' Trainer).  A failing step is recorded as such and the rest go on.  The time budget (``--budget``) gives
each step as limit the smaller of its own timeout and what is left; a step whose least useful
time (``min_s``) no longer fits is recorded as not run, and later, shorter steps still get their
turn.  Results (scripts/gpu_results.py) are rendered into the report between two markers after
every step, so a run cut short (a lease ending) keeps everything it measured.
scripts/gpu_report.py is the command line.  A harness of shell steps, not library code: it lives
with the scripts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from gpu_results import BEGIN, END, GLOBAL_BATCH, NOT_RUN, classify, inference_rows, render, summarize, write_report  # noqa: E402,F401

INFERENCE_SETS = ("fixed-512", "variable-512", "fixed-8192", "variable-8192")  # scripts/bench_inference.py's SETS


@dataclass
class Step:
    name: str
    cmd: str  # one shell command line
    timeout_s: int
    kind: str = "setup"  # setup | tests | train | bench
    meta: dict = field(default_factory=dict)  # train: config, compile, microbatch, row_tokens, run_dir; bench: json, sets
    min_s: int = 10  # not started with less budget left than this (it could tell nothing)
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


# (label, config, compile[:compile_mode], microbatch, max_seq_len)
FULL_RUNS = [  # most telling first: a run the time budget cannot reach is reported as not run
    ("base", "configs/base.yaml", "none", 48, 1024),  # as shipped
    ("base", "configs/base.yaml", "model", 48, 1024),
    ("base", "configs/base.yaml", "model:reduce-overhead", 48, 1024),  # one graph, replayed as a CUDA graph
    ("base-context-extension", "configs/base-context-extension.yaml", "blocks", 9, 8192),
    ("base", "configs/base.yaml", "blocks", 48, 1024),
    ("large", "configs/large.yaml", "blocks", 28, 1024),
    ("base", "configs/base.yaml", "blocks", 64, 1024),
    ("base", "configs/base.yaml", "blocks", 32, 1024),
]
SMOKE_RUNS = [("tiny", "configs/tiny.yaml", "none", 4, 128)]


def _py(o: Options, script: str, *args: str) -> str:
    return " ".join([shlex.quote(o.python), shlex.quote(os.path.join(o.repo, script)), *map(shlex.quote, args)])


def train_overrides(o: Options, run_dir: str, shards: str, compile: str, mb: int, seq: int,
                    compile_mode: str = "default") -> list[str]:
    """What a benchmark run changes in a shipped config: data, a short fixed duration, one
    global batch without warmup, no eval, no checkpoints, no prior weights."""
    rows = max(1, (GLOBAL_BATCH * 1024 // seq) // mb) if not o.smoke else 2
    return [
        f"data.local={shards}", f"data.max_seq_len={seq}", f"data.microbatch_size={mb}",
        f"data.global_batch_size={rows * mb}", "data.batch_size_warmup_min=0", "data.batch_size_warmup_tokens=0",
        "data.eval_split=null", f"data.num_workers={0 if o.smoke else 4}", f"compile={compile}", f"compile_mode={compile_mode}",
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
    compile, _, mode = compile.partition(":")
    name = f"{label}-{compile}{'-' + mode if mode else ''}-mb{mb}"
    run_dir = os.path.join(o.work, "runs", name)
    over = train_overrides(o, run_dir, os.path.join(o.work, f"shards{seq}"), compile, mb, seq, mode or "default")
    meta = {"config": config, "compile": f"{compile} ({mode})" if mode else compile, "microbatch": mb, "row_tokens": mb * seq,
            "run_dir": run_dir}
    # full size: imports, data start-up and compilation take about a minute before a step is timed
    return Step(f"train {name}", _py(o, "train.py", os.path.join(o.repo, config), *over), 90 if o.smoke else 240, "train",
                meta, min_s=15 if o.smoke else 90)


def _bench_steps(o: Options) -> list[Step]:
    out = os.path.join(o.work, "bench_inference.json")  # rewritten after each set: a cut step keeps its rows
    meta = {"json": out, "sets": list(INFERENCE_SETS)}
    if o.smoke:  # the harness's test on CPU: the inference benchmark at toy sizes (~12 s, most of it imports)
        return [Step("bench_inference vs transformers", _py(o, "scripts/bench_inference.py", "--docs", "4", "--long-docs", "1",
                     "--length-divisor", "32", "--repeats", "1", "--json", out), 120, "bench", meta, min_s=20)]
    return [Step("bench_inference vs transformers", _py(o, "scripts/bench_inference.py", "--device", "cuda", "--dtype", "bf16",
                 "--config", "base", "--docs", "2048", "--long-docs", "128", "--json", out), 180, "bench", meta, min_s=45),
            Step("bench_model vs transformers",
                 _py(o, "scripts/bench_model.py", "--device", "cuda", "--dtype", "bf16", "--config", "base"), 180, "bench",
                 min_s=45),
            _pretraining_step(o)]


def _pretraining_step(o: Options) -> Step:
    """Time to the same held-out loss against transformers' Trainer (scripts/bench_pretraining.py) on
    real text: the demo's shards, carried along as runs/demo/shards (make demo's steps 1-3 write them;
    the GPU machine cannot fetch the corpus).  The tiny model with one 4,096-token row per step, 4M
    tokens, one seed; the Trainer's flash-attention (unpadded) path too when flash-attn imports."""
    shards = os.path.join(o.repo, "runs", "demo", "shards")
    unpadded = f"$({shlex.quote(o.python)} -c 'import flash_attn' 2>/dev/null && echo transformers-unpadded)"
    bench = _py(o, "scripts/bench_pretraining.py", "--config", os.path.join(o.repo, "configs", "tiny.yaml"), "--data", shards,
                "--tokens", "4M", "--seeds", "17", "--device", "cuda", "--points", "6", "--overwrite",
                "--out", os.path.join(o.work, "bench-pretraining"))
    cmd = (f"test -f {shlex.quote(os.path.join(shards, 'stats.json'))} || {{ echo 'no runs/demo/shards: carry the demo shards "
           f"along'; exit 3; }}; {bench} --stacks flexbert transformers transformers-sparse {unpadded} -- data.microbatch_size=32")
    return Step("bench_pretraining vs transformers' Trainer", cmd, 240, "bench", min_s=120)


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


# the clock the budget is spent on (tests drive it with recorded step times: a verdict about the
# budget must not depend on how loaded the machine running the test is)
budget_clock = time.monotonic


def run_steps(steps: list[Step], budget_s: float, log_dir: str, echo=print, after_step=None) -> None:
    """Run each step under ``timeout`` (its limit: its own, or what is left of the budget); a step
    with less than its ``min_s`` left is not started (``NOT_RUN``, the seconds left recorded).
    Record status, output tail, a train run's figures and an inference step's rows (also of a
    step cut short); ``after_step(steps)`` after each one (the report is rewritten then)."""
    os.makedirs(log_dir, exist_ok=True)
    t0 = budget_clock()
    for i, s in enumerate(steps):
        left = budget_s - (budget_clock() - t0)
        limit = int(min(s.timeout_s, left))
        if limit < s.min_s:
            s.status, s.result["left_s"] = NOT_RUN, round(left, 1)
            echo(f"[gpu-report] {s.name}: {s.status} ({left:.0f}s left, needs {s.min_s}s)")
        else:
            echo(f"[gpu-report] {s.name} (<= {limit}s): {s.cmd}")
            _run_one(s, limit, os.path.join(log_dir, f"{i:02d}.log"))
            echo(f"[gpu-report] {s.name}: {s.status} ({s.result['seconds']}s)")
        if after_step is not None:
            after_step(steps)


def _run_one(s: Step, limit: int, log_path: str) -> None:
    if "json" in s.meta and os.path.exists(s.meta["json"]):
        os.remove(s.meta["json"])  # an earlier run's rows must not pass for this one's
    start = time.monotonic()
    p = subprocess.run(["timeout", "-k", "10", str(limit), "bash", "-c", s.cmd], capture_output=True, text=True)
    out = p.stdout + p.stderr
    with open(log_path, "w") as f:
        f.write(f"$ {s.cmd}\n{out}")
    s.status, s.output_tail = classify(p.returncode, out), "\n".join(out.strip().splitlines()[-15:])
    s.result["seconds"] = round(time.monotonic() - start)
    metrics = os.path.join(s.meta.get("run_dir", ""), "metrics.jsonl")
    if s.kind == "train" and os.path.isfile(metrics):
        s.result.update(summarize(metrics))
    if "json" in s.meta:
        s.result["rows"] = inference_rows(s.meta["json"])
