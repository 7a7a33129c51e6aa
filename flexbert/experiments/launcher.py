"""Run training / fine-tuning commands as subprocesses, N at a time, each under a lock.

What the sweep runner (flexbert/experiments/sweep.py) and any other orchestrator share: a job is a command,
a log file and a lock folder.  A job whose lock a live process holds (another runner, a train.py
started by hand) is skipped; the lock is given back when the job ends.  train.py itself also takes
its run folder's lock, so a sweep and a hand-started run never write one folder together.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

from flexbert.env import THIRD_PARTY_DEFAULTS
from flexbert.train import run_lock


@dataclass
class Job:
    name: str
    command: list[str]
    log: str  # appended to: the command line, then its output
    lock: str  # a folder whose .lock this runner holds while the job runs


def flexbert_command(name: str, *args: str) -> list[str]:
    """The command line of ``flexbert NAME ARGS`` in this interpreter (``python -m flexbert``)."""
    return [sys.executable, "-m", "flexbert", name, *args]


def child_env(threads: Optional[int] = None, **extra: str) -> dict[str, str]:
    """The environment of a child process: ours, FlexBERT's third-party defaults (where unset),
    ``OMP_NUM_THREADS`` when the cores are shared out, and ``extra``."""
    env = dict(os.environ)
    for key, value in THIRD_PARTY_DEFAULTS.items():
        env.setdefault(key, value)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    env.update(extra)
    return env


def run_command(cmd: list[str], **kw) -> int:
    """Run one child in the foreground (its output streams to ours); its exit code."""
    return subprocess.call(cmd, env=child_env(), **kw)


def _start(job: Job, threads: Optional[int]):
    os.makedirs(os.path.dirname(os.path.abspath(job.log)), exist_ok=True)
    log = open(job.log, "a")
    log.write("$ " + " ".join(shlex.quote(c) for c in job.command) + "\n")
    log.flush()
    proc = subprocess.Popen(job.command, cwd=os.getcwd(), env=child_env(threads), stdout=log, stderr=subprocess.STDOUT)
    return proc, log, time.time()


def said_finished(echo: Callable[[str], None], tag: str) -> Callable[[Job, int, float], bool]:
    """A ``finished`` for ``run_jobs`` that says how each job ended (its log on failure)."""
    def finished(job: Job, rc: int, seconds: float) -> bool:
        echo(f"[{tag}] {job.name}: done in {seconds:.0f}s" if rc == 0 else
             f"[{tag}] {job.name}: FAILED (exit {rc}) after {seconds:.0f}s; see {job.log}")
        return rc == 0
    return finished


def run_jobs(jobs: list[Job], parallel: int = 1, skip: Callable[[Job], bool] = lambda j: False,
             finished: Callable[[Job, int, float], bool] = lambda j, rc, s: rc == 0, echo=print,
             tag: str = "sweep") -> list[str]:
    """Run ``jobs`` ``parallel`` at a time; ``skip(job)`` is asked again just before each start
    (another runner may have done it meanwhile); ``finished(job, rc, seconds)`` says whether it
    succeeded; ``tag`` begins what it says.  Returns the names of the jobs that failed."""
    threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else None
    pending, active, failed = list(jobs), [], []
    total, started = len(pending), 0
    while pending or active:
        while pending and len(active) < max(1, parallel):
            job = pending.pop(0)
            started += 1
            try:
                if skip(job):
                    raise run_lock.RunLocked("done meanwhile")
                run_lock.acquire(job.lock, f"runner of {job.name}")
            except run_lock.RunLocked:
                echo(f"[{tag}] {job.name}: done or running elsewhere, skipped")
                continue
            echo(f"[{tag}] ({started}/{total}) {job.name}: running, log {job.log}")
            active.append((job, *_start(job, threads)))
        time.sleep(0.2)
        for item in list(active):
            job, proc, log, t0 = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                run_lock.release(job.lock)
                if not finished(job, proc.returncode, time.time() - t0):
                    failed.append(job.name)
    return failed


def run_jobs_said(jobs: list[Job], parallel: int, tag: str) -> list[str]:
    """``run_jobs`` saying on standard output (flushed) how each job started and ended; the failed names."""
    echo = lambda m: print(m, flush=True)  # noqa: E731
    return run_jobs(jobs, parallel, finished=said_finished(echo, tag), echo=echo, tag=tag)
