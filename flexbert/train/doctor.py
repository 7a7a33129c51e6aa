"""The throughput doctor: where a run's time went, and which knob to turn.

``TimeLedger`` (a callback) splits wall time, on rank 0, from Composer's events and host clocks
only (no device synchronisation added): waiting for the next batch (BEFORE/AFTER_DATALOADER),
the step (forward, backward, optimizer; on a GPU the host waits for the device at the loss's
first read, so queued work lands in the step or the next data wait), evaluation (EVAL_START/END)
and checkpointing (the saver, at BATCH_CHECKPOINT).  The cumulative seconds go into every
metrics.jsonl record (``timing/<part>_s``); ``verdict`` turns them into a sentence, printed at the
end of training and by ``scripts/diagnose.py RUN_DIR``.

The bookkeeping is a pure function of the recorded timeline: ``ledger`` folds ``(event, clock)``
pairs into seconds per part (``CHARGES`` says which part the time before each event belongs to),
``verdict`` turns seconds into words, ``diagnose`` reads the run's totals (the last record).  The
callback only reads a clock (``clock``, ``time.perf_counter`` by default) at each event, so the
tests feed all three recorded timings instead of wall-clock shares of a live run.

The profiler switch: ``profiler: {start_batch, batches, out}`` in a run config.

torch's profiler (CPU, and CUDA kernels on a GPU) records batches ``start_batch`` to
``start_batch + batches - 1`` (numbered as in metrics.jsonl: batch 1 is the first step), writes a
Chrome-format trace per rank (``out/trace_rank{R}.json``: chrome://tracing or https://ui.perfetto.dev)
and prints the operators that took the most time.  Only those batches pay the profiler's overhead.
On a machine without a GPU the profiler library's own log (Kineto: ``gpuGetDeviceCount failed``
on a CUDA build of torch) is turned off (``KINETO_LOG_LEVEL``, unless set), so a CPU run stays quiet.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from flexbert.train import metric_keys as K

DATA_BOUND, EVAL_BOUND, CHECKPOINT_BOUND = 0.25, 0.25, 0.15  # shares of the wall time that name the bottleneck


def verdict(seconds: dict[str, float], settings: Optional[dict] = None) -> str:
    """Plain words from ``{"data", "step", "eval", "checkpoint"}`` seconds (and a few settings)."""
    s = settings or {}
    total = sum(seconds.values())
    if total <= 0:
        return "no timing recorded yet"
    share = {k: v / total for k, v in seconds.items()}
    parts = ", ".join(f"{k} {100 * share[k]:.0f}%" for k in ("data", "step", "eval", "checkpoint"))
    if share["data"] >= DATA_BOUND:
        return (f"data-bound: {100 * share['data']:.0f}% of the time waiting for the next batch ({parts}). Raise "
                f"data.num_workers (now {s.get('num_workers', '?')}), data.predownload, or read the shards from a local "
                "disk (data.local as a cache of data.remote); check with scripts/bench_data.py")
    if share["eval"] >= EVAL_BOUND:
        return (f"eval-bound: {100 * share['eval']:.0f}% of the time in evaluation ({parts}). Raise eval_interval "
                f"(now {s.get('eval_interval', '?')}) or lower eval_subset_num_batches")
    if share["checkpoint"] >= CHECKPOINT_BOUND:
        return (f"checkpoint-bound: {100 * share['checkpoint']:.0f}% of the time saving ({parts}). Raise save_interval "
                f"(now {s.get('save_interval', '?')}) or save to a faster disk")
    if s.get("device") == "cpu":  # the GPU knobs below do not apply
        return (f"compute-bound: {100 * share['step']:.0f}% of the time in forward/backward/optimizer ({parts}), as it "
                "should be. On CPU the step is the model's arithmetic: a smaller model or fewer tokens finish sooner")
    return (f"compute-bound: {100 * share['step']:.0f}% of the time in forward/backward/optimizer ({parts}), as it "
            f"should be. To go faster: compile: model (now {s.get('compile', '?')}), the fastest attention_backend, a larger data.microbatch_size "
            "(docs/benchmarks-gpu.md). Under batch-size warmup the batches per second fall as the batch grows; "
            "compare tokens/s (throughput/tokens_per_sec), not batches")


PARTS = tuple(K.TIMING)  # data, step, eval, checkpoint
# the part the time since the previous event belongs to, by the event that ends it
CHARGES = {
    "before_dataloader": "step",  # the tail of the previous step
    "after_dataloader": "data",  # waiting for the next batch
    "batch_end": "step",  # forward, backward, optimizer
    "eval_start": "step",  # between the end of the step and the evaluation
    "eval_end": "eval",
    "batch_checkpoint": "checkpoint",  # after the saver in the callback table: its time is the save
}


def charge(seconds: dict[str, float], event: str, since: Optional[float], now: float) -> None:
    """Add the time from ``since`` (the previous event's clock; None at the start) to ``now`` to
    the part ``event`` ends."""
    if since is not None:
        seconds[CHARGES[event]] += now - since


def ledger(events: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Seconds per part from a recorded timeline of ``(event, clock)`` pairs, ``fit_start`` first."""
    seconds = dict.fromkeys(PARTS, 0.0)
    since = None
    for event, now in events:
        if event != "fit_start":
            charge(seconds, event, since, now)
        since = now
    return seconds


class TimeLedger(Callback):
    def __init__(self, settings: Optional[dict] = None, echo: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.perf_counter):
        self.settings, self.echo, self.clock = settings or {}, echo, clock
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._mark: Optional[float] = None

    def _charge(self, event: str) -> None:
        now = self.clock()
        charge(self.seconds, event, self._mark, now)
        self._mark = now

    def fit_start(self, state: State, logger: Logger) -> None:
        self._mark = self.clock()
        self.settings = {**self.settings, "device": state.device.name}  # cpu | gpu, as resolved

    def _log(self, logger: Logger) -> dict[str, float]:
        logged = {k: round(v, 3) for k, v in self.seconds.items()}
        if dist.get_global_rank() == 0:
            logger.log_metrics({K.TIMING[k]: v for k, v in logged.items()})
        return logged

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._charge("before_dataloader")

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._charge("after_dataloader")

    def batch_end(self, state: State, logger: Logger) -> None:
        self._charge("batch_end")

    def eval_start(self, state: State, logger: Logger) -> None:
        self._charge("eval_start")

    def eval_end(self, state: State, logger: Logger) -> None:
        self._charge("eval_end")

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        self._charge("batch_checkpoint")
        self._log(logger)  # the batch's record (written by the loggers after the callbacks) then holds it all

    def fit_end(self, state: State, logger: Logger) -> None:
        logged = self._log(logger)  # the final record: the totals the verdict reads, so diagnose says the same
        if dist.get_global_rank() == 0:
            self.echo(f"[doctor] {verdict(logged, self.settings)}")


def settings_of(cfg: Any) -> dict:
    return {"num_workers": cfg.data.num_workers, "eval_interval": cfg.eval_interval, "save_interval": cfg.save_interval,
            "compile": cfg.compile, "device": cfg.device}


def diagnose(records: list[dict], settings: Optional[dict] = None) -> str:
    """The verdict from a run's metrics.jsonl records: the run's totals (the timings are cumulative,
    so the last record that has them)."""
    timed = [r for r in records if K.TIMING["step"] in r]
    if not timed:
        return "no timing in metrics.jsonl (a run from before the throughput doctor, or one that has not logged yet)"
    settings = dict(settings or {})
    if settings.get("device", "auto") == "auto":  # GPU runs log GPU memory (callbacks.memory)
        settings["device"] = "gpu" if any(K.MEMORY_ALLOCATED in r for r in records) else "cpu"
    return verdict({k: float(timed[-1][key]) for k, key in K.TIMING.items()}, settings)


class StepProfiler(Callback):
    def __init__(self, start_batch: int, batches: int, out: str, echo: Callable[[str], None] = print, top: int = 12):
        self.start, self.end, self.out, self.echo, self.top = start_batch, start_batch + batches - 1, out, echo, top
        self.prof: Optional[torch.profiler.profile] = None
        self.path: Optional[str] = None

    def batch_start(self, state: State, logger: Logger) -> None:
        if self.prof is None and int(state.timestamp.batch) + 1 == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available() and state.device.name == "gpu":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            else:  # read when the profiler first starts: its library has no GPU to report on here
                os.environ.setdefault("KINETO_LOG_LEVEL", "5")
            self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self.prof.__enter__()

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.prof is not None and int(state.timestamp.batch) >= self.end:
            self._finish(state)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.prof is not None:  # the run ended inside the window
            self._finish(state)

    def _finish(self, state: State) -> None:
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        os.makedirs(self.out, exist_ok=True)
        self.path = os.path.join(self.out, f"trace_rank{dist.get_global_rank()}.json")
        prof.export_chrome_trace(self.path)
        if dist.get_global_rank() == 0:
            sort = "self_cuda_time_total" if torch.cuda.is_available() and state.device.name == "gpu" else "self_cpu_time_total"
            table = prof.key_averages().table(sort_by=sort, row_limit=self.top)
            self.echo(f"[profiler] batches {self.start}-{self.end}: trace {self.path}; top operators by {sort}:\n{table}")
