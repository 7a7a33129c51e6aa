"""Callbacks and loggers of a FlexBERT run.

* ``ScheduleStepper``   steps the LR schedulers at BATCH_START, so a batch's LR is the schedule at
                        the tokens seen *before* it (Composer steps one batch late).
* ``ExactResume``       puts the data loader's state (packer + Streaming, every rank) and every
                        rank's RNG into checkpoints and restores them: resume never replays.
* ``PhaseOverride``     after a checkpoint load, the configured LR / weight decay / max_lr win
                        over the loaded optimizer's (phase changes).
* ``NaNGuard``          stops the run on a non-finite (or too large) loss, before a checkpoint
                        of bad weights can be written.
* ``RunMetrics``        LR, packing efficiency, rows per step, throughput and MFU, GPU memory.

The loggers (console line, metrics.jsonl) live in flexbert/train/loggers.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from typing import Any, Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist, reproducibility

from flexbert.data.batch import batch_stats
from flexbert.model.flops import peak_flops_for
from flexbert.train import metric_keys as K
from flexbert.train.checkpointing import find_saver
from flexbert.train.optim import override_hyperparameters


class TrainingDiverged(RuntimeError):
    """Raised by NaNGuard; train.py turns it into one clear line and a non-zero exit."""


# --------------------------------------------------------------------------- schedule
class ScheduleStepper(Callback):
    def batch_start(self, state: State, logger: Logger) -> None:
        for scheduler in state.schedulers:
            scheduler.step()


# --------------------------------------------------------------------------- exact resume
class ExactResume(Callback):
    """Checkpoint the train loader's state of every rank and every rank's RNG; restore both.

    Only rank 0 writes the checkpoint, so ``state_dict`` gathers the per-rank loader states (it is
    called on every rank while saving).  The RNG is restored at the first BATCH_START after a
    resume: after Composer's reseed at init and after the loader's iterator has been created,
    which is where the uninterrupted run stood when the checkpoint was taken.
    """

    def __init__(self, loader: Any):
        self.loader = loader
        self._pending_rng: Optional[list] = None
        self.resumed_from_batch: Optional[int] = None

    def state_dict(self) -> dict:
        local = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        return {
            "world_size": dist.get_world_size(),
            "loader": dist.all_gather_object(local),
            "rng": reproducibility.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        world = dist.get_world_size()
        if state.get("world_size", world) != world:
            # another number of ranks: the data continues where all old ranks together stood
            # (flexbert/data/elastic.py); Composer restores the RNG of the first ranks only
            self.loader.load_elastic_state(state["loader"])
            self._pending_rng = state.get("rng")
            return
        loader_state = state["loader"][dist.get_global_rank()]
        if loader_state is not None:
            self.loader.load_state_dict(loader_state)
        self._pending_rng = state.get("rng")

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._pending_rng is not None:
            self.resumed_from_batch = int(state.timestamp.batch)
            reproducibility.load_rng_state(self._pending_rng)
            self._pending_rng = None


class DataProgress(Callback):
    """``data/tokens/<source>``: real tokens trained on from each data.streams source so far,
    summed over ranks (a small gather of a few integers per step); and the end of training when
    the loader has read its ``data.epochs`` (else Composer would loop over empty epochs)."""

    def __init__(self, loader: Any):
        self.loader = loader

    def batch_end(self, state: State, logger: Logger) -> None:
        mine = self.loader.tokens_per_source()
        if mine:
            totals = self.loader.docs.sync.gather(list(mine.values()))
            logger.log_metrics({K.source_tokens(k): float(sum(t[i] for t in totals)) for i, k in enumerate(mine)})

    def epoch_end(self, state: State, logger: Logger) -> None:
        if self.loader.docs.finished:
            state.stop_training()


# --------------------------------------------------------------------------- phase change
class PhaseOverride(Callback):
    def __init__(self, optimizer_config):
        self.optimizer_config = optimizer_config

    def after_load(self, state: State, logger: Logger) -> None:
        for opt in state.optimizers:
            override_hyperparameters(opt, self.optimizer_config, state.schedulers)


# --------------------------------------------------------------------------- NaN guard
class NaNGuard(Callback):
    """Runs before the saver at BATCH_END (the callback table's order): a diverged step turns the
    saver off, so bad weights are never checkpointed."""

    def __init__(self, max_loss: Optional[float] = None):
        self.max_loss = max_loss
        self.saver = None

    def fit_start(self, state: State, logger: Logger) -> None:
        self.saver = find_saver(state)

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = state.total_loss_dict.get(K.TRAIN_LOSS)
        if loss is None:
            return
        bad = not math.isfinite(loss) or (self.max_loss is not None and loss > self.max_loss)
        if not bad:
            return
        if self.saver is not None:
            self.saver.enabled = False
        last = None
        if self.saver is not None and self.saver.saved:
            last = self.saver.saved[-1]
        what = f"loss is {loss}" if not math.isfinite(loss) else f"loss {loss:.4g} > max_loss {self.max_loss}"
        raise TrainingDiverged(
            f"training diverged at batch {int(state.timestamp.batch)} ({int(state.timestamp.token)} tokens): {what}; "
            f"stopped without saving. Last good checkpoint: {last or 'none'}"
        )


# --------------------------------------------------------------------------- metrics
class RunMetrics(Callback):
    """LR, packing efficiency, rows per step, tokens/s, MFU and GPU memory, logged at BATCH_END."""

    def __init__(
        self,
        lr: bool = True,
        packing: bool = True,
        throughput: bool = True,
        window: int = 10,
        flops_per_token_body: Optional[float] = None,
        flops_per_prediction: Optional[float] = None,
        sparse_head: bool = True,
        peak_flops: Optional[float] = None,
        memory: bool = True,
    ):
        self.lr, self.packing, self.throughput, self.memory = lr, packing, throughput, memory
        self.f_body, self.f_head, self.sparse_head = flops_per_token_body, flops_per_prediction, sparse_head
        self.peak_flops = peak_flops
        self.window: deque = deque(maxlen=window)
        self._t_fetch: Optional[float] = None
        self._batch_stats: dict[str, float] = {}

    def fit_start(self, state: State, logger: Logger) -> None:
        if self.peak_flops is None and torch.cuda.is_available() and state.device.name == "gpu":
            self.peak_flops = peak_flops_for(torch.cuda.get_device_name())

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._t_fetch = time.perf_counter()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        st = batch_stats(state.batch)
        self._batch_stats = {"tokens": float(st["num_tokens"]), "masked": float(st["num_masked"]),
                             "rows": float(st["rows"]), "packing": st["packing_efficiency"]}
        if isinstance(state.batch, dict) and "mlm_probability" in state.batch:
            self._batch_stats["rate"] = float(state.batch["mlm_probability"])

    def batch_end(self, state: State, logger: Logger) -> None:
        out: dict[str, float] = {}
        if self.lr and state.optimizers:
            for i, group in enumerate(state.optimizers[0].param_groups):
                out[K.lr_group(i)] = float(group["lr"])
            out[K.LR] = float(state.optimizers[0].param_groups[0]["lr"])
        stats = self._batch_stats
        if self.packing and stats:
            out[K.PACKING] = stats["packing"]
            out[K.ROWS_PER_RANK] = stats["rows"]
            out[K.MASKED_FRACTION] = stats["masked"] / max(stats["tokens"], 1.0)
            if "rate" in stats:
                out[K.MLM_PROBABILITY] = stats["rate"]
        if self.throughput and self._t_fetch is not None and stats:
            dt = time.perf_counter() - self._t_fetch
            flops = 0.0
            if self.f_body is not None and self.f_head is not None:
                predicted = stats["masked"] if self.sparse_head else stats["tokens"]
                flops = stats["tokens"] * self.f_body + predicted * self.f_head
            self.window.append((dt, stats["tokens"], flops))
            secs = sum(w[0] for w in self.window)
            if secs > 0:
                tok_s = sum(w[1] for w in self.window) / secs
                out[K.TOKENS_PER_SEC_PER_DEVICE] = tok_s
                out[K.TOKENS_PER_SEC] = tok_s * dist.get_world_size()
                if flops:
                    flops_s = sum(w[2] for w in self.window) / secs
                    out[K.FLOPS_PER_SEC_PER_DEVICE] = flops_s
                    if self.peak_flops:
                        out[K.MFU] = flops_s / self.peak_flops
        if self.memory and torch.cuda.is_available() and state.device.name == "gpu":
            out[K.MEMORY_ALLOCATED] = torch.cuda.max_memory_allocated() / 2**30
            out[K.MEMORY_RESERVED] = torch.cuda.memory_reserved() / 2**30
        if out:
            logger.log_metrics(out)


class DocAudit(Callback):
    """Record which documents (Streaming sample ids) each rank trained on, per step.

    Writes ``{folder}/rank{r}.jsonl``: one ``{"batch": b, "doc_ids": [...]}`` line per step (ids of
    the documents in that step's rows; chunks of one long document share its id).  For checking
    that ranks read disjoint data and that a resume neither skips nor replays documents."""

    def __init__(self, folder: str):
        self.folder = folder
        self._ids: list[int] = []

    def fit_start(self, state: State, logger: Logger) -> None:
        os.makedirs(self.folder, exist_ok=True)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        rows = state.batch["rows"] if isinstance(state.batch, dict) and "rows" in state.batch else [state.batch]
        self._ids = [int(i) for r in rows if "doc_ids" in r for i in r["doc_ids"].tolist()]

    def batch_end(self, state: State, logger: Logger) -> None:
        path = os.path.join(self.folder, f"rank{dist.get_global_rank()}.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps({"batch": int(state.timestamp.batch), "doc_ids": self._ids}) + "\n")
