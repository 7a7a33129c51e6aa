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
import time
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from flexbert.config import ConfigError
from flexbert.errors import FlexBertError
from flexbert.experiments.launcher import Job, flexbert_command, run_jobs
from flexbert.experiments.report import write_report
from flexbert.experiments.results import results_of
from flexbert.registry import RegistryError
from flexbert.train.config import load_run_config
from flexbert.train.run_folder import RunFolder
from flexbert.train.run_identity import ConfigChanged, check_rerun

KINDS = ("train", "finetune")
TOP_KEYS = ("name", "kind", "base", "out", "fixed", "list", "grid", "seed_key", "metric")
DONE = "sweep_done.json"


class SweepError(FlexBertError, ValueError):
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


def _plain_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and all(c.isalnum() or c in "-_." for c in name)


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
        if label is not None and not _plain_name(str(label)):
            raise SweepError(f"list: name {str(label)!r} must be a plain folder name (letters, digits, '-', '_', '.'; "
                             "no '/' and not starting with '.')")
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


def train_overrides(sweep: Sweep, run: Run) -> list[str]:
    """A train run's ``key=value`` arguments after its base config."""
    given = {**sweep.fixed, **run.overrides}
    args = [f"{k}={format_value(v)}" for k, v in given.items()]
    group = [] if "loggers.wandb_group" in given else [f"loggers.wandb_group={sweep.name}"]  # one wandb group a sweep
    return [*args, f"run_name={run.name}", f"run_dir={run_dir(sweep, run)}", *group]


def command_args(sweep: Sweep, run: Run, launcher: bool = False) -> list[str]:
    """The arguments of one run's command (``flexbert train`` or ``flexbert finetune``)."""
    if sweep.kind == "train":
        base = sweep.base
        if launcher and not os.path.relpath(base).startswith(".."):
            base = os.path.relpath(base)  # printed commands read better relative to where they run
        return [base, *train_overrides(sweep, run)]
    args: list[str] = []
    if sweep.base:
        args += ["--config", sweep.base]
    for k, v in {**sweep.fixed, **run.overrides}.items():
        flag = "--" + k.replace("_", "-")
        args += [flag, *map(format_value, v)] if isinstance(v, list) else [flag, format_value(v)]
    return [*args, "--out", run_dir(sweep, run), "--overwrite"]  # the sweep owns its variants' folders


def command(sweep: Sweep, run: Run, launcher: bool = False) -> list[str]:
    """The command line of one run; ``launcher`` gives the form printed for a cluster scheduler
    (``composer train.py ...`` / ``flexbert finetune ...``)."""
    args = command_args(sweep, run, launcher)
    if launcher:
        return (["composer", "train.py"] if sweep.kind == "train" else ["flexbert", "finetune"]) + args
    return flexbert_command("train" if sweep.kind == "train" else "finetune", *args)


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
                if json.load(f).get("command") == command_args(sweep, run):
                    return "done"
        except (OSError, json.JSONDecodeError):
            pass
    return "partial" if os.path.isdir(folder) and os.listdir(folder) else "new"


def validate(sweep: Sweep) -> None:
    """Load every train run's config now, so a bad key fails before hours of runs, naming the run."""
    if sweep.kind != "train":
        return
    for run in sweep.runs:
        try:
            load_run_config(sweep.base, train_overrides(sweep, run))
        except (ConfigError, RegistryError) as e:
            raise SweepError(f"{sweep.path}: run {run.name}: {e}") from None


def log_path(sweep: Sweep, run: Run) -> str:
    return os.path.join(sweep.out, "logs", f"{run.name}.log")


def stale(sweep: Sweep, run: Run) -> Optional[str]:
    """Why a train run's folder holds another model or data than its resolved settings now (the
    base config or the sweep file was edited), or None."""
    folder = RunFolder(run_dir(sweep, run))
    if sweep.kind != "train" or not folder.has_config():
        return None
    try:
        check_rerun(folder, load_run_config(sweep.base, train_overrides(sweep, run)))
    except ConfigChanged as e:
        return str(e).split(": ", 1)[-1].split("; ")[0]
    return None


def _prepare(sweep: Sweep, run: Run) -> bool:
    """Say what will happen to a run; a stale run folder is moved aside (nothing is deleted).
    True when the run has to be started."""
    state, why = status(sweep, run), stale(sweep, run)
    if why:
        aside = f"{run_dir(sweep, run)}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(run_dir(sweep, run), aside)
        print(f"[sweep] {run.name}: its settings changed since it ran ({why}); rerunning, old run kept in {aside}", flush=True)
        return True
    if state == "done":
        print(f"[sweep] {run.name}: already done, skipped", flush=True)
        return False
    if state == "partial":
        print(f"[sweep] {run.name}: started before, resuming", flush=True)
    return True


def _finished(sweep: Sweep, run: Run, rc: int, seconds: float) -> bool:
    if rc == 0:
        with open(os.path.join(run_dir(sweep, run), DONE), "w") as f:
            json.dump({"command": command_args(sweep, run), "seconds": round(seconds, 1)}, f)
            f.write("\n")
        print(f"[sweep] {run.name}: done in {seconds:.0f}s", flush=True)
        return True
    print(f"[sweep] {run.name}: FAILED (exit {rc}); see {log_path(sweep, run)}", flush=True)
    return False


def run_all(sweep: Sweep, parallel: int = 1, only: Optional[list[str]] = None) -> list[str]:
    """Run every run not done yet, ``parallel`` at a time; returns the names that failed."""
    by_name = {r.name: r for r in sweep.runs}
    todo = [by_name[n] for n in only] if only else list(sweep.runs)  # --only: in the order given
    jobs = [Job(r.name, command(sweep, r), log_path(sweep, r), os.path.join(sweep.out, "logs", r.name))
            for r in todo if _prepare(sweep, r)]
    return run_jobs(jobs, parallel, skip=lambda j: status(sweep, by_name[j.name]) == "done",
                    finished=lambda j, rc, sec: _finished(sweep, by_name[j.name], rc, sec), echo=lambda m: print(m, flush=True))


def collect(sweep: Sweep) -> list:
    """A RunResult for every run (runs not started have no numbers)."""
    return results_of([(r.name, r.group, r.overrides, status(sweep, r), run_dir(sweep, r)) for r in sweep.runs])


def report(sweep: Sweep, metric: Optional[str] = None, done_only: bool = False) -> dict[str, str]:
    """results.csv, results.md and the plots in the sweep's folder (``done_only``: finished runs only)."""
    return write_report(collect(sweep), sweep.out, sweep.name, metric or sweep.metric, done_only)
