"""The profiler switch: ``profiler: {start_batch, batches, out}`` in a run config.

torch's profiler (CPU, and CUDA kernels on a GPU) records batches ``start_batch`` to
``start_batch + batches - 1`` (numbered as in metrics.jsonl: batch 1 is the first step), writes a
Chrome-format trace per rank (``out/trace_rank{R}.json``: chrome://tracing or https://ui.perfetto.dev)
and prints the operators that took the most time.  Only those batches pay the profiler's overhead.
On a machine without a GPU the profiler library's own log (Kineto: ``gpuGetDeviceCount failed``
on a CUDA build of torch) is turned off (``KINETO_LOG_LEVEL``, unless set), so a CPU run stays quiet.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


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
