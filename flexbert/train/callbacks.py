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
* ``ConsoleLogger``     one readable line per N batches, plus eval lines.
* ``JSONLLogger``       ``metrics.jsonl``: one record per batch with everything logged in it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from typing import Any, Optional, TextIO

import torch
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist, reproducibility

from flexbert.train.composer_model import num_masked, num_real_tokens, packing_efficiency


class TrainingDiverged(RuntimeError):
    """Raised by NaNGuard; train.py turns it into one clear line and a non-zero exit."""


def _rank0() -> bool:
    return dist.get_global_rank() == 0


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
            raise RuntimeError(
                f"checkpoint was written by {state['world_size']} ranks, this run has {world}: "
                "exact data resume needs the same number of ranks"
            )
        loader_state = state["loader"][dist.get_global_rank()]
        if loader_state is not None:
            self.loader.load_state_dict(loader_state)
        self._pending_rng = state.get("rng")

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._pending_rng is not None:
            self.resumed_from_batch = int(state.timestamp.batch)
            reproducibility.load_rng_state(self._pending_rng)
            self._pending_rng = None


# --------------------------------------------------------------------------- phase change
class PhaseOverride(Callback):
    def __init__(self, optimizer_config):
        self.optimizer_config = optimizer_config
        self.applied = False

    def after_load(self, state: State, logger: Logger) -> None:
        from flexbert.train.optim import override_hyperparameters

        for opt in state.optimizers:
            override_hyperparameters(opt, self.optimizer_config, state.schedulers)
        self.applied = True


# --------------------------------------------------------------------------- NaN guard
class NaNGuard(Callback):
    def __init__(self, max_loss: Optional[float] = None, saver=None):
        self.max_loss = max_loss
        self.saver = saver

    def batch_end(self, state: State, logger: Logger) -> None:
        loss = state.total_loss_dict.get("loss/train/total")
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
            from flexbert.train.flops import peak_flops_for

            self.peak_flops = peak_flops_for(torch.cuda.get_device_name())

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._t_fetch = time.perf_counter()

    def after_dataloader(self, state: State, logger: Logger) -> None:
        batch = state.batch
        rows = batch["rows"] if isinstance(batch, dict) and "rows" in batch else [batch]
        self._batch_stats = {
            "tokens": float(num_real_tokens(batch)),
            "masked": float(num_masked(batch)),
            "rows": float(len(rows)),
            "packing": packing_efficiency(batch),
        }

    def batch_end(self, state: State, logger: Logger) -> None:
        out: dict[str, float] = {}
        if self.lr and state.optimizers:
            for i, group in enumerate(state.optimizers[0].param_groups):
                out[f"lr/group{i}"] = float(group["lr"])
            out["lr"] = float(state.optimizers[0].param_groups[0]["lr"])
        stats = self._batch_stats
        if self.packing and stats:
            out["data/packing_efficiency"] = stats["packing"]
            out["data/rows_per_rank"] = stats["rows"]
            out["data/masked_fraction"] = stats["masked"] / max(stats["tokens"], 1.0)
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
                out["throughput/tokens_per_sec_per_device"] = tok_s
                out["throughput/tokens_per_sec"] = tok_s * dist.get_world_size()
                if flops:
                    flops_s = sum(w[2] for w in self.window) / secs
                    out["throughput/flops_per_sec_per_device"] = flops_s
                    if self.peak_flops:
                        out["throughput/mfu"] = flops_s / self.peak_flops
        if self.memory and torch.cuda.is_available() and state.device.name == "gpu":
            out["memory/max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            out["memory/reserved_gb"] = torch.cuda.memory_reserved() / 2**30
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


# --------------------------------------------------------------------------- loggers
def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _fmt_tokens(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{int(n)}"


# What a console progress line shows, in order: (logged key, how to print it).
_CONSOLE_FIELDS = (
    ("loss/train/total", lambda x: f" loss {x:.4f}"),
    ("metrics/train/MLMAccuracy", lambda x: f" acc {x:.3f}"),
    ("lr", lambda x: f" lr {x:.3g}"),
    ("throughput/tokens_per_sec", lambda x: f" | {_fmt_tokens(x)} tok/s"),
    ("throughput/mfu", lambda x: f" mfu {100 * x:.1f}%"),
    ("data/packing_efficiency", lambda x: f" pack {100 * x:.1f}%"),
    ("memory/max_allocated_gb", lambda x: f" mem {x:.1f}GB"),
)


class JSONLLogger(LoggerDestination):
    """Append one JSON record per batch (and per final eval) to ``path``; rank 0 only.

    A record holds ``batch`` (completed steps), ``tokens``, ``samples``, ``time`` and every metric
    logged during that batch, eval included.  On resume, records past the resumed batch (written
    after the checkpoint by the run that died) are dropped, so each batch appears once.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._pending: dict[str, Any] = {}
        self._t0 = time.time()

    def fit_start(self, state: State, logger: Logger) -> None:
        if not _rank0():
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        resumed_at = int(state.timestamp.batch)
        if os.path.exists(self.path):
            kept = []
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if rec.get("batch", 0) <= resumed_at:
                        kept.append(line if line.endswith("\n") else line + "\n")
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept if resumed_at > 0 else [])
            os.replace(tmp, self.path)

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if _rank0():
            for k, v in metrics.items():
                self._pending[k] = _plain(v)

    def _write(self, state: State, kind: str) -> None:
        if not _rank0() or not self._pending:
            return
        ts = state.timestamp
        rec = {"kind": kind, "batch": int(ts.batch), "tokens": int(ts.token), "samples": int(ts.sample),
               "time": round(time.time() - self._t0, 3)}
        rec.update({k: v for k, v in self._pending.items() if not k.startswith("time/")})
        self._pending = {}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        self._write(state, "train")

    def fit_end(self, state: State, logger: Logger) -> None:
        self._write(state, "final")
        self._fit_done = True

    def eval_end(self, state: State, logger: Logger) -> None:
        # Composer runs the closing evaluation after FIT_END (when training does not end on an
        # eval_interval boundary); its metrics would otherwise never reach the file.
        if getattr(self, "_fit_done", False):
            self._write(state, "eval")


class ConsoleLogger(LoggerDestination):
    """Readable progress on stdout (rank 0): a line per ``interval`` batches and one per eval."""

    def __init__(self, interval: int = 10, stream: TextIO | None = None):
        super().__init__()
        self.interval = interval
        self.stream = stream or sys.stdout
        self.latest: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}
        self._t0: Optional[float] = None

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        for k, v in metrics.items():
            v = _plain(v)
            (self._eval if k.startswith("metrics/eval/") else self.latest).__setitem__(k, v)

    def _print(self, line: str) -> None:
        if _rank0():
            print(line, file=self.stream, flush=True)

    def fit_start(self, state: State, logger: Logger) -> None:
        self._t0 = time.time()
        where = f" (resumed at batch {int(state.timestamp.batch)})" if int(state.timestamp.batch) else ""
        self._print(f"[flexbert] training {state.run_name} for {state.max_duration}{where}")

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        ts = state.timestamp
        batch = int(ts.batch)
        elapsed = state.get_elapsed_duration()
        done = elapsed is not None and float(elapsed) >= 1.0
        if batch % self.interval == 0 or done or batch == 1:
            v = self.latest
            parts = [f"[batch {batch}", f"tok {_fmt_tokens(int(ts.token))}"]
            if elapsed is not None:
                parts.append(f"{100 * float(elapsed):.0f}%]")
            line = " ".join(parts) + "".join(fmt(v[key]) for key, fmt in _CONSOLE_FIELDS if key in v)
            self._print(line)
        if self._eval:
            e = self._eval
            line = f"[eval @ batch {batch}]"
            for key, label in (("MLMLoss", "loss"), ("MLMAccuracy", "acc"), ("MLMPerplexity", "ppl")):
                if f"metrics/eval/{key}" in e:
                    line += f" {label} {e[f'metrics/eval/{key}']:.4f}"
            self._print(line)
            self.latest.update(e)
            self._eval = {}

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._t0 is not None:
            self._print(f"[flexbert] done: {int(state.timestamp.batch)} batches, "
                        f"{_fmt_tokens(int(state.timestamp.token))} tokens in {time.time() - self._t0:.1f}s")
