"""Every callback of a pretraining run, declared once, in the order Composer runs them.

Composer calls callbacks in list order at each event, so the order is part of the contract; the
rules that fix it are the comments of the entries.  Adding a callback is one entry here (and its
switch in ``CallbacksConfig`` when it is optional); ``build_trainer`` and the docs' table read
this list.  A factory gets the run config, the train loader and the run folder path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from flexbert.model.flops import body_flops_per_token, head_flops_per_prediction
from flexbert.train import callbacks as cb
from flexbert.train.checkpointing import AtomicCheckpointSaver
from flexbert.train.composer_model import to_composer_time
from flexbert.train.doctor import StepProfiler, TimeLedger, settings_of
from flexbert.train.preemption import GracefulStop


@dataclass(frozen=True)
class Entry:
    name: str
    enabled_by: str  # the config that switches it on ("always" for the core ones)
    enabled: Callable[[Any], bool]  # cfg -> bool
    make: Callable[[Any, Any, dict], Any]  # (cfg, train loader, run identity) -> Callback


def _always(cfg) -> bool:
    return True


def _metrics(cfg, loader, ident):
    c = cfg.callbacks
    return cb.RunMetrics(lr=c.lr_monitor, packing=c.packing_efficiency, throughput=c.throughput,
                         window=c.throughput_window, flops_per_token_body=body_flops_per_token(cfg.model, cfg.data.max_seq_len),
                         flops_per_prediction=head_flops_per_prediction(cfg.model), sparse_head=cfg.model.sparse_prediction,
                         peak_flops=c.peak_flops, memory=c.memory)


def _saver(cfg, loader, ident):
    return AtomicCheckpointSaver(cfg.resolved_save_folder, to_composer_time(cfg.save_interval, "save_interval"),
                                 cfg.save_num_to_keep, identity=ident, remote=cfg.remote_save_folder)


def _doctor(cfg, loader, ident):
    return TimeLedger(settings_of(cfg))


def _profiler(cfg, loader, ident):
    p = cfg.profiler
    return StepProfiler(p.start_batch, p.batches, p.out or os.path.join(cfg.resolved_run_dir, "profile"))


CALLBACKS: tuple[Entry, ...] = (
    # BATCH_START, first of all: the batch's LR is the schedule at the tokens seen before it
    Entry("schedule", "always", _always, lambda cfg, loader, ident: cb.ScheduleStepper()),
    # BATCH_START after the scheduler: restores the RNG once, where the uninterrupted run stood
    Entry("resume", "always", _always, lambda cfg, loader, ident: cb.ExactResume(loader)),
    # AFTER_LOAD: the configured optimizer settings win over a loaded checkpoint's
    Entry("phase", "always", _always, lambda cfg, loader, ident: cb.PhaseOverride(cfg.optimizer)),
    # BATCH_END before the saver: a diverged step turns saving off, so it is never checkpointed
    Entry("nan_guard", "callbacks.nan_guard", lambda cfg: cfg.callbacks.nan_guard,
          lambda cfg, loader, ident: cb.NaNGuard(cfg.callbacks.max_loss)),
    # BATCH_END: LR, packing, throughput, memory (logged before the checkpoint event writes the record)
    Entry("metrics", "always", _always, _metrics),
    # BATCH_START / BATCH_END: a torch profiler trace of the chosen batches (checkpoints outside it)
    Entry("profiler", "profiler.start_batch", lambda cfg: cfg.profiler.start_batch > 0, _profiler),
    # BATCH_CHECKPOINT: periodic and final checkpoints, each carrying the run's identity
    Entry("saver", "save_folder (not empty)", lambda cfg: bool(cfg.resolved_save_folder), _saver),
    # BATCH_CHECKPOINT after the saver: where the time went, the saver's time included (the doctor)
    Entry("doctor", "always", _always, _doctor),
    # BATCH_CHECKPOINT after the saver: a batch already saved on schedule is not saved twice
    Entry("graceful_stop", "callbacks.graceful_stop", lambda cfg: bool(cfg.callbacks.graceful_stop),
          lambda cfg, loader, ident: GracefulStop(tuple(cfg.callbacks.graceful_stop))),
    # AFTER_DATALOADER / BATCH_END: which documents each rank trained on
    Entry("audit", "callbacks.audit_doc_ids", lambda cfg: cfg.callbacks.audit_doc_ids,
          lambda cfg, loader, ident: cb.DocAudit(os.path.join(cfg.resolved_run_dir, "doc_ids"))),
    # BATCH_END: tokens per data.streams source; EPOCH_END: stop once data.epochs are read
    Entry("data", "data.streams or data.epochs", lambda cfg: bool(cfg.data.streams or cfg.data.epochs),
          lambda cfg, loader, ident: cb.DataProgress(loader)),
)


def build_callbacks(cfg, train_loader, identity: dict) -> dict[str, Any]:
    """The enabled callbacks by name, in event order (dicts keep insertion order)."""
    return {e.name: e.make(cfg, train_loader, identity) for e in CALLBACKS if e.enabled(cfg)}


def markdown_table() -> str:
    """The docs' table of callbacks, in event order."""
    rows = ["| # | callback | enabled by |", "|---|---|---|"]
    rows += [f"| {i} | `{e.name}` | `{e.enabled_by}` |" for i, e in enumerate(CALLBACKS, 1)]
    return "\n".join(rows)
