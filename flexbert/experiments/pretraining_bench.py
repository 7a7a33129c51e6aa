"""Time to a held-out loss: FlexBERT against transformers' Trainer on the same model, data and tokens
(``scripts/bench_pretraining.py``).

Each (stack, seed) is a *leg*, a child process:

* ``flexbert``: ``train.py CONFIG data.local=SHARDS seed=S max_duration=Ntok`` as a user runs it,
  plus a checkpoint every ``N / points`` tokens and no in-run evaluation;
* ``transformers`` (and ``-sparse``, ``-unpadded``): flexbert/experiments/trainer_leg.py, the
  Trainer with ``ModernBertForMaskedLM`` from the same config (that module lists what differs).

Legs run ``parallel`` at a time (default: as many as the cores hold at ``threads`` each, the legs of a
seed side by side), so the load of a shared machine falls on both stacks alike; the 1-minute load
average is sampled meanwhile.  Then every checkpoint goes to a Hugging Face folder (FlexBERT's through
its export, transformers' through ``save_pretrained``) and ONE evaluator scores them all: the
project's held-out MLM evaluation (flexbert/eval/mlm.py on the shards' validation split, at a fixed
masking rate and seed, so every model sees the same masked positions).  Seconds are training
seconds (data + step; checkpoint saves and start-up left out, the latter reported beside).
flexbert/experiments/bench_report.py turns the curves into the JSON result, table and plots.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from flexbert.config import ConfigError
from flexbert.data.outputs import prepare_output_dir
from flexbert.errors import FlexBertError
from flexbert.eval.mlm import check_model_tokenizer, data_config, evaluate_mlm, mlm_loader
from flexbert.experiments.bench_report import leg_summary, machine, summarize, write
from flexbert.experiments.trainer_leg import LegSpec
from flexbert.train import metric_keys as K
from flexbert.train.config import load_run_config
from flexbert.experiments.launcher import child_env, flexbert_command
from flexbert.train.run_folder import RunFolder
from flexbert.weights.export import export_to_hf
from flexbert.weights.load import load_model

STACKS = {"flexbert": None, "transformers": "padded", "transformers-sparse": "sparse", "transformers-unpadded": "unpadded"}
BASELINE = "transformers"


class BenchError(FlexBertError, ValueError):
    """Bad input to the benchmark: one line naming the option and the fix."""


@dataclass
class BenchOptions:
    config: str
    data: str
    tokens: int
    seeds: list[int]
    out: str
    device: str = "cpu"  # cpu | cuda
    stacks: list[str] = field(default_factory=lambda: ["flexbert", BASELINE])
    threads: int = 1  # per leg
    parallel: int = 2  # legs at a time
    points: int = 8  # checkpoints per leg
    eval_mlm_probability: float = 0.15
    eval_seed: int = 1234
    eval_max_batches: Optional[int] = None
    overwrite: bool = False
    overrides: list[str] = field(default_factory=list)  # key=value for the run config of both stacks


@dataclass
class Leg:
    stack: str
    seed: int
    out: str
    command: list[str]
    result: dict = field(default_factory=dict)  # rc, process_seconds, peak_rss_mb


def shard_stats(data: str) -> dict:
    path = os.path.join(data, "stats.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise BenchError(f"--data {data}: no readable stats.json (MDS shards from data_prep/tokenize_to_mds.py)") from None


def check(o: BenchOptions) -> dict:
    """Everything that can be refused before anything is written; the shards' stats."""
    for split in ("train", "validation"):
        if not os.path.isfile(os.path.join(o.data, split, "index.json")):
            raise BenchError(f"--data {o.data}: no {split}/index.json (write shards with data_prep/tokenize_to_mds.py)")
    stats = shard_stats(o.data)
    try:
        load_run_config(o.config, [*o.overrides, f"data.local={os.path.abspath(o.data)}"])
    except (ConfigError, FileNotFoundError) as e:
        raise BenchError(f"--config {o.config}: {str(e).splitlines()[0]}") from None
    unknown = [s for s in o.stacks if s not in STACKS]
    if unknown or "flexbert" not in o.stacks or BASELINE not in o.stacks:
        raise BenchError(f"--stacks: {' '.join(o.stacks)}: choose among {', '.join(STACKS)}, with flexbert and {BASELINE}")
    if "transformers-unpadded" in o.stacks and not _has_flash_attn(o.device):
        raise BenchError("--stacks transformers-unpadded: needs --device cuda and the flash-attn package")
    if o.tokens < 1000 or o.points < 1 or o.threads < 1 or o.parallel < 1 or not o.seeds:
        raise BenchError("--tokens >= 1000, --points, --threads, --parallel >= 1 and at least one --seeds, please")
    return stats


def _has_flash_attn(device: str) -> bool:
    if device != "cuda":
        return False
    try:
        import flash_attn  # noqa: F401  (optional: CUDA machines only)
    except ImportError:
        return False
    return True


def marks(o: BenchOptions) -> list[int]:
    every = o.tokens // o.points
    return [every * (i + 1) for i in range(o.points)]


def plan(o: BenchOptions, stats: dict) -> list[Leg]:
    """The legs, seed by seed, the stacks of a seed next to each other."""
    data, legs = os.path.abspath(o.data), []
    split = stats.get("splits", {}).get("train", {})
    mean_doc = split.get("tokens", 0) / max(1, split.get("samples", 0))
    for seed in o.seeds:
        for stack in o.stacks:
            out = os.path.join(o.out, "legs", f"{stack}-seed{seed}")
            if stack == "flexbert":
                every = o.tokens // o.points
                cmd = flexbert_command("train", os.path.abspath(o.config), *o.overrides,
                       f"data.local={data}", f"seed={seed}", f"run_dir={out}", "save_folder=null", f"max_duration={o.tokens}tok",
                       f"save_interval={every}tok", "save_num_to_keep=-1", "autoresume=false", "data.eval_split=null",
                       "loggers.wandb=false", f"device={'gpu' if o.device == 'cuda' else 'cpu'}")
            else:
                spec = LegSpec(os.path.abspath(o.config), list(o.overrides), data, o.tokens, seed, out, marks(o), o.device,
                               o.threads, STACKS[stack], mean_doc)
                cmd = [sys.executable, "-m", "flexbert.experiments.trainer_leg", os.path.join(out, "spec.json")]
                os.makedirs(out, exist_ok=True)
                with open(cmd[-1], "w") as f:
                    json.dump(asdict(spec), f, indent=1)
            legs.append(Leg(stack, seed, out, cmd))
    return legs


class LoadSampler:
    """The 1-minute load average every few seconds while the legs run (in a thread)."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.samples, self._stop = every_s, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.before = os.getloadavg()[0]
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self, ours: int) -> dict:
        s = self.samples or [self.before]
        return {"before": round(self.before, 2), "min": round(min(s), 2), "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2), "our_threads": ours, "samples": len(self.samples)}


def _start(leg: Leg, threads: int):
    os.makedirs(leg.out, exist_ok=True)
    env = child_env(threads)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(os.path.join(os.path.dirname(leg.out), f"{os.path.basename(leg.out)}.log"), "w")
    proc = subprocess.Popen(leg.command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log, time.perf_counter()


def run_legs(legs: list[Leg], parallel: int, threads: int, echo=print) -> None:
    """Run the legs ``parallel`` at a time; each leg's exit code, wall seconds and peak RSS (wait4)."""
    pending, active = list(legs), []
    while pending or active:
        while pending and len(active) < parallel:
            leg = pending.pop(0)
            echo(f"[bench] {leg.stack} seed {leg.seed}: running (log {leg.out}.log)")
            active.append((leg, *_start(leg, threads)))
        time.sleep(0.5)
        for item in list(active):
            leg, proc, log, t0 = item
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.close()
            active.remove(item)
            leg.result = {"rc": proc.returncode, "process_seconds": round(time.perf_counter() - t0, 2),
                          "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
            echo(f"[bench] {leg.stack} seed {leg.seed}: exit {proc.returncode} after {leg.result['process_seconds']:.0f}s")


def flexbert_points(leg: Leg, o: BenchOptions) -> list[dict]:
    """(tokens, training seconds, checkpoint) of a FlexBERT leg's checkpoints, from its metrics.jsonl."""
    run = RunFolder(leg.out)
    records = {r[K.BATCH]: r for r in run.metrics() if K.TIMING["step"] in r}
    points = []
    for batch, path in sorted(run.checkpoints()):
        r = records[batch]
        points.append({"tokens": int(r[K.TOKENS]), "step": batch, "path": path,
                       "seconds": float(r[K.TIMING["data"]]) + float(r[K.TIMING["step"]])})
        if r.get(K.MEMORY_ALLOCATED) is not None:
            leg.result["peak_memory_mb"] = float(r[K.MEMORY_ALLOCATED]) * 1024
    return points


def collect_points(leg: Leg, o: BenchOptions) -> list[dict]:
    """Every checkpoint of a leg as an HF folder (FlexBERT's exported), with tokens and seconds."""
    if leg.stack != "flexbert":
        with open(os.path.join(leg.out, "leg.json")) as f:
            result = json.load(f)
        leg.result.update(peak_memory_mb=result.get("peak_memory_mb"), shape=result.get("shape"))
        return result["points"]
    points = flexbert_points(leg, o)
    for p in points:
        hf = os.path.join(leg.out, "hf", f"ba{p['step']}")
        export_to_hf(hf, checkpoint=p["path"], pooling="none", overwrite=True)
        p["checkpoint"], p["path"] = p["path"], hf
    return points


def evaluate_folder(path: str, o: BenchOptions) -> dict:
    """The one evaluator: held-out MLM loss of an HF folder on the shards' validation split."""
    loaded = load_model(path, "mlm")
    cfg = data_config(os.path.abspath(o.data), "validation", o.eval_mlm_probability, o.eval_seed)
    check_model_tokenizer(loaded, cfg, f"shards {o.data}")
    r = evaluate_mlm(loaded.model, mlm_loader(cfg), o.eval_max_batches, o.device)
    return {"loss": r["loss"], "accuracy": r["accuracy"], "masked_tokens": r["masked_tokens"]}


def run(o: BenchOptions, command: str = "", echo=print) -> dict:
    """Check, train every leg, score every checkpoint, write OUT/result.json, table.md and the plots."""
    stats = check(o)
    prepare_output_dir(o.out, overwrite=o.overwrite, inputs=[o.data, o.config])
    legs = plan(o, stats)
    with LoadSampler() as load:
        run_legs(legs, o.parallel, o.threads, echo)
    bad = next((leg for leg in legs if leg.result["rc"] != 0), None)
    if bad is not None:
        raise BenchError(f"{bad.stack} seed {bad.seed} failed (exit {bad.result['rc']}); its log: {bad.out}.log")
    curves: dict = {stack: {} for stack in o.stacks}
    torch.set_num_threads(o.threads)  # a loaded machine punishes more threads than cores (OpenMP spinning)
    for leg in legs:
        echo(f"[bench] scoring {leg.stack} seed {leg.seed}: its checkpoints as HF folders, one evaluator")
        points = collect_points(leg, o)
        for p in points:
            p.update(evaluate_folder(p["path"], o))
        curves[leg.stack][leg.seed] = leg_summary(points, leg.result)
    header = {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "load": load.summary(min(o.parallel, len(legs)) * o.threads), "config": o.config, "data": o.data,
              "tokens": o.tokens, "device": o.device, "threads": o.threads, "parallel": o.parallel,
              "overrides": o.overrides, "eval": {"mlm_probability": o.eval_mlm_probability, "seed": o.eval_seed,
                                                 "max_batches": o.eval_max_batches}}
    result = summarize(curves, BASELINE, marks(o), header)
    result["paths"] = write(result, o.out)
    return result
