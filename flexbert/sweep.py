"""Sweeps: expand a sweep file into runs, run them (resumably), and report on them.

A sweep file (``configs/sweeps/*.yaml``; format in docs/evaluation.md) names a ``base`` (a train.py
config, or for ``kind: finetune`` a YAML of scripts/finetune.py options), ``fixed`` overrides, and
a ``list`` of variants and/or a ``grid`` of values.  Runs are named after their overrides; runs that
differ only in ``seed_key`` form one group.  A finished run (``OUT/RUN/sweep_done.json`` holds the
same command) is skipped; any other is started again with the same command, which resumes it.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from flexbert.train import run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("train", "finetune")
TOP_KEYS = ("name", "kind", "base", "out", "fixed", "list", "grid", "seed_key", "metric")
DONE = "sweep_done.json"


class SweepError(ValueError):
    """A sweep file cannot be used; the message is one line naming the file and key."""


@dataclass
class Run:
    name: str
    group: str  # the name without the seed part: runs of one group differ only by seed
    overrides: dict[str, Any]


@dataclass
class Sweep:
    path: str
    name: str
    kind: str
    base: Optional[str]
    out: str
    fixed: dict[str, Any]
    runs: list[Run]
    seed_key: str = "seed"
    metric: Optional[str] = None  # the report's headline column (default: by kind)


def format_value(value: Any) -> str:
    """A value as train.py's / the shell's ``key=value`` wants it."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return json.dumps(value)  # true / false / null / [..] / {..}
    return str(value)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's last dotted part, or the whole key where two last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def run_name(overrides: dict[str, Any], short: dict[str, str]) -> str:
    if not overrides:
        return "base"
    parts = [f"{short[k]}-{format_value(v)}" for k, v in overrides.items()]
    return "_".join(p.replace("/", "-").replace(" ", "") for p in parts)


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping of key: value, got {type(raw).__name__}")
    return {str(k): v for k, v in raw.items()}


def expand(list_entries: list[dict], grid: dict[str, list], seed_key: str = "seed") -> list[Run]:
    """Runs for list x grid (either may be empty), in file order, grid varying fastest."""
    entries = list_entries or [{}]
    grid_keys = list(grid)
    combos = [dict(zip(grid_keys, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e if k != "name" and k not in keys]
    keys += [k for k in grid_keys if k not in keys]
    short = _short_keys(keys)
    runs, seen = [], set()
    for entry in entries:
        label = entry.get("name")
        own = {k: v for k, v in entry.items() if k != "name"}
        head = str(label) if label else run_name({k: v for k, v in own.items() if k != seed_key}, short)
        for combo in combos:
            overrides = {**own, **combo}
            tail = {k: v for k, v in combo.items() if k != seed_key}
            parts = [p for p in (head, run_name(tail, short) if tail else "") if p and p != "base"]
            group = "_".join(parts) or "base"
            seed = {k: v for k, v in overrides.items() if k == seed_key}
            name = f"{group}_{run_name(seed, short)}" if seed else group
            if name in seen:
                raise SweepError(f"list/grid: two runs would both be named '{name}'; give the list entries a name:")
            seen.add(name)
            runs.append(Run(name, group, overrides))
    return runs


def load_sweep(path: str) -> Sweep:
    if not os.path.exists(path):
        raise SweepError(f"{path}: no such sweep file")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping at the top level")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SweepError(f"{path}: unknown key '{unknown[0]}'; valid keys: {', '.join(TOP_KEYS)}")
    kind = raw.get("kind", "train")
    if kind not in KINDS:
        raise SweepError(f"{path}: kind: unknown value '{kind}'; valid choices: {', '.join(KINDS)}")
    here = os.path.dirname(os.path.abspath(path))
    base = raw.get("base")
    if base is not None:
        base = base if os.path.isabs(base) else os.path.normpath(os.path.join(here, base))
        if not os.path.exists(base):
            raise SweepError(f"{path}: base: {base} does not exist")
    elif kind == "train":
        raise SweepError(f"{path}: base: a train sweep needs the run config it varies (e.g. base: ../tiny.yaml)")
    entries = raw.get("list") or []
    if not isinstance(entries, list):
        raise SweepError(f"{path}: list: expected a list of mappings")
    entries = [_mapping(e, f"{path}: list[{i}]") for i, e in enumerate(entries)]
    grid = _mapping(raw.get("grid"), f"{path}: grid")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise SweepError(f"{path}: grid.{k}: expected a non-empty list of values")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
    seed_key = str(raw.get("seed_key", "seed"))
    try:
        runs = expand(entries, grid, seed_key)
    except SweepError as e:
        raise SweepError(f"{path}: {e}") from None
    return Sweep(path, name, kind, base, str(raw.get("out") or os.path.join("runs", "sweeps", name)),
                 _mapping(raw.get("fixed"), f"{path}: fixed"), runs, seed_key, raw.get("metric"))


def run_dir(sweep: Sweep, run: Run) -> str:
    return os.path.join(sweep.out, run.name)


def command(sweep: Sweep, run: Run, python: Optional[str] = None, launcher: bool = False) -> list[str]:
    """The command line of one run; ``launcher`` gives the ``composer train.py ...`` form."""
    py = python or sys.executable
    if sweep.kind == "train":
        head = ["composer", "train.py"] if launcher else [py, os.path.join(ROOT, "train.py")]
        args = [f"{k}={format_value(v)}" for k, v in {**sweep.fixed, **run.overrides}.items()]
        base = sweep.base
        if launcher and not os.path.relpath(base).startswith(".."):
            base = os.path.relpath(base)  # printed commands read better relative to where they run
        return [*head, base, *args, f"run_name={run.name}", f"run_dir={run_dir(sweep, run)}"]
    head = ["python", "scripts/finetune.py"] if launcher else [py, os.path.join(ROOT, "scripts", "finetune.py")]
    args: list[str] = []
    if sweep.base:
        args += ["--config", sweep.base]
    for k, v in {**sweep.fixed, **run.overrides}.items():
        flag = "--" + k.replace("_", "-")
        args += [flag, *map(format_value, v)] if isinstance(v, list) else [flag, format_value(v)]
    return [*head, *args, "--out", run_dir(sweep, run)]


def emit(sweep: Sweep) -> list[str]:
    """One shell line per run, for a cluster scheduler."""
    return [" ".join(shlex.quote(c) for c in command(sweep, r, launcher=True)) for r in sweep.runs]


def status(sweep: Sweep, run: Run) -> str:
    """done (finished with this command) | partial (started: will resume) | new."""
    folder = run_dir(sweep, run)
    marker = os.path.join(folder, DONE)
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                if json.load(f).get("command") == command(sweep, run)[1:]:
                    return "done"
        except (OSError, json.JSONDecodeError):
            pass
    return "partial" if os.path.isdir(folder) and os.listdir(folder) else "new"


def validate(sweep: Sweep) -> None:
    """Load every train run's config now, so a bad key fails before hours of runs, naming the run."""
    if sweep.kind != "train":
        return
    from flexbert.config import ConfigError
    from flexbert.registry import RegistryError
    from flexbert.train.config import load_run_config

    for run in sweep.runs:
        args = command(sweep, run)[3:]
        try:
            load_run_config(sweep.base, args)
        except (ConfigError, RegistryError) as e:
            raise SweepError(f"{sweep.path}: run {run.name}: {e}") from None


def _env(threads: Optional[int]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else ROOT
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def _start(sweep: Sweep, run: Run, threads: Optional[int]) -> tuple[subprocess.Popen, Any, float]:
    """Start a run under its run folder's lock, held here and handed to the child (train.py)."""
    folder = run_dir(sweep, run)
    run_lock.acquire(folder, f"sweep {sweep.name}")
    log = open(os.path.join(folder, "sweep.log"), "a")
    cmd = command(sweep, run)
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    env = dict(_env(threads), **{run_lock.HANDOFF: str(os.getpid())})
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log, time.time()


def _finish(sweep: Sweep, run: Run, rc: int, seconds: float) -> bool:
    run_lock.release(run_dir(sweep, run))
    if rc == 0:
        with open(os.path.join(run_dir(sweep, run), DONE), "w") as f:
            json.dump({"command": command(sweep, run)[1:], "seconds": round(seconds, 1)}, f)
            f.write("\n")
        print(f"[sweep] {run.name}: done in {seconds:.0f}s", flush=True)
        return True
    print(f"[sweep] {run.name}: FAILED (exit {rc}); see {os.path.join(run_dir(sweep, run), 'sweep.log')}", flush=True)
    return False


def run_all(sweep: Sweep, parallel: int = 1, only: Optional[list[str]] = None) -> list[str]:
    """Run every run not done yet, ``parallel`` at a time; returns the names that failed."""
    by_name = {r.name: r for r in sweep.runs}
    todo = [by_name[n] for n in only] if only else list(sweep.runs)  # --only: in the order given
    pending = []
    for r in todo:
        state = status(sweep, r)
        if state == "done":
            print(f"[sweep] {r.name}: already done, skipped", flush=True)
        else:
            pending.append(r)
            if state == "partial":
                print(f"[sweep] {r.name}: started before, resuming", flush=True)
    threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else None
    failed, active = [], []
    total, started = len(pending), 0
    while pending or active:
        while pending and len(active) < max(1, parallel):
            run = pending.pop(0)
            started += 1
            if status(sweep, run) == "done" or run_lock.held_by_other(run_dir(sweep, run)):  # another runner got to it
                print(f"[sweep] {run.name}: done or running elsewhere, skipped", flush=True)
                continue
            print(f"[sweep] ({started}/{total}) {run.name}: running, log {run_dir(sweep, run)}/sweep.log", flush=True)
            active.append((run, *_start(sweep, run, threads)))
        time.sleep(0.2)
        for item in list(active):
            run, proc, log, t0 = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                if not _finish(sweep, run, proc.returncode, time.time() - t0):
                    failed.append(run.name)
    return failed


def collect(sweep: Sweep) -> list:
    """A RunResult for every run (runs not started have no numbers)."""
    from flexbert.eval.results import RunResult, summarize

    return [RunResult(r.name, r.group, dict(r.overrides), status(sweep, r), *summarize(run_dir(sweep, r))) for r in sweep.runs]


def report(sweep: Sweep, metric: Optional[str] = None, done_only: bool = False) -> dict[str, str]:
    """results.csv, results.md and the plots in the sweep's folder (``done_only``: finished runs only)."""
    from flexbert.eval.report import write_report
    from flexbert.eval.results import default_metric

    everything = collect(sweep)
    results = [r for r in everything if r.status == "done" or not done_only]
    return write_report(results, sweep.out, sweep.name, metric or sweep.metric or default_metric(results), len(everything))
