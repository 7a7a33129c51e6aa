"""Graceful stop on a signal: finish the batch, save a checkpoint, exit with code 143.

Clusters stop jobs with a signal: SLURM sends SIGTERM on preemption or ``scancel`` (and, with
``#SBATCH --signal=TERM@120``, two minutes before the time limit); Kubernetes sends SIGTERM before
deleting a pod; ``composer`` forwards SIGTERM to every rank and kills them 30 s later.  SIGUSR1 is
for signalling train.py processes directly (the ``composer`` launcher itself dies on it).
Composer alone turns SIGTERM into an immediate ``sys.exit``, losing everything since the last
periodic checkpoint.  :class:`GracefulStop` instead lets the batch in flight finish, saves a
checkpoint through the run's :class:`~flexbert.train.checkpointing.AtomicCheckpointSaver` (so the
newest checkpoint is the stopping batch, and autoresume continues exactly there), and stops
training by raising :class:`Preempted`, which ``train.py`` reports in one line with exit code 143
(128 + SIGTERM, what a killed job reports, so schedulers and wrapper scripts see "not finished").

A second signal while the batch is finishing gets the previous behaviour (an immediate exit).
With several ranks every rank stops after the same batch: each batch end takes the maximum of the
ranks' flags (one 4-byte all-reduce), so a signal that reaches the ranks at different moments still
gives one consistent checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from flexbert.train.checkpointing import find_saver

SIGNALS = ("SIGTERM", "SIGUSR1")
EXIT_CODE = 128 + signal.SIGTERM  # 143


class Preempted(RuntimeError):
    """Training stopped on a signal after saving ``checkpoint`` (None when no checkpoint folder)."""

    def __init__(self, signame: str, batch: int, checkpoint: Optional[str]):
        where = f"checkpoint {checkpoint}; rerun the same command to resume" if checkpoint else \
            "no checkpoint folder (save_folder is off), so nothing was saved"
        super().__init__(f"stopped by {signame} after batch {batch}: {where}")
        self.signame, self.batch, self.checkpoint = signame, batch, checkpoint


class GracefulStop(Callback):
    """Turns the signals in ``signals`` into "stop after this batch, with a checkpoint"."""

    def __init__(self, signals: tuple[str, ...] = SIGNALS):
        self.saver: Any = None  # the run's checkpoint saver, found at fit start
        self.signals = [getattr(signal, name) for name in signals if hasattr(signal, name)]
        self.received: Optional[int] = None  # the first signal, set by the handler
        self.stop: Optional[Preempted] = None  # set once the checkpoint is saved; raised at the next event
        self._previous: dict[int, Any] = {}

    # -- handlers ----------------------------------------------------------------------------------
    def fit_start(self, state: State, logger: Logger) -> None:
        self.saver = find_saver(state)
        if threading.current_thread() is not threading.main_thread():
            return  # Python installs handlers from the main thread only (a notebook runner may differ)
        self._pid = os.getpid()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the trainer process stops it when it stops
        if self.received is not None:  # a second signal: no more patience
            self.restore()
            previous = signal.getsignal(signum)
            if callable(previous):
                previous(signum, frame)
            sys.exit(128 + signum)
        self.received = signum
        print(f"[flexbert] {signal.Signals(signum).name} received: finishing this batch, then saving a "
              "checkpoint and stopping (send it again to stop at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            try:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous.clear()

    def fit_end(self, state: State, logger: Logger) -> None:
        self.stop = None  # the signal came during the last batch: the run is complete
        self.restore()

    def close(self, state: State, logger: Logger) -> None:
        self.restore()

    # -- stopping ----------------------------------------------------------------------------------
    def _agreed_signal(self, state: State) -> int:
        """The signal any rank received (0: none), the same answer on every rank.  One 4-byte
        all-reduce per batch; its ``.item()`` adds no stall, since Composer has just all-reduced
        and read the batch's loss on the host at this point of every step."""
        flag = self.received or 0
        if dist.get_world_size() == 1:
            return flag
        t = state.device.tensor_to_device(torch.tensor([flag], dtype=torch.int32))
        dist.all_reduce(t, reduce_operation="MAX")
        return int(t.item())

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        signum = self._agreed_signal(state)
        if not signum or self.stop is not None:
            return
        batch = int(state.timestamp.batch)
        path = None
        if self.saver is not None and self.saver.enabled:
            path = self.saver.save(state, logger) or self.saver.path_of(batch)
        self.stop = Preempted(signal.Signals(signum).name, batch, path)

    # Raised at the next event rather than here: the loggers write this batch's record after the
    # callbacks of the same event.  An eval due at this batch is skipped (it could outlast the grace
    # period), and a signal during the last batch lets the run finish normally (fit_end).
    def _stop_now(self, state: State, logger: Logger) -> None:
        if self.stop is not None:
            self.restore()
            raise self.stop

    before_dataloader = eval_before_all = epoch_end = _stop_now
