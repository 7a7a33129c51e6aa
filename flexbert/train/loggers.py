"""Loggers of a FlexBERT run.

* ``ConsoleLogger``     one readable line per N batches, plus eval lines.
* ``JSONLLogger``       ``metrics.jsonl``: one record per batch with everything logged in it.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import sys
import time
import urllib.parse
from typing import Any, Mapping, Optional, TextIO

import torch
from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from flexbert.train import metric_keys as K
from flexbert.train.run_folder import iter_records


def _rank0() -> bool:
    return dist.get_global_rank() == 0


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _fmt_tokens(n: float) -> str:
    if not math.isfinite(n):
        return str(n)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{int(n)}"


# What a console progress line shows, in order: (logged key, how to print it).
_CONSOLE_FIELDS = (
    (K.TRAIN_LOSS, lambda x: f" loss {x:.4f}"),
    (K.TRAIN_ACCURACY, lambda x: f" acc {x:.3f}"),
    (K.LR, lambda x: f" lr {x:.3g}"),
    (K.TOKENS_PER_SEC, lambda x: f" | {_fmt_tokens(x)} tok/s"),
    (K.MFU, lambda x: f" mfu {100 * x:.1f}%"),
    (K.PACKING, lambda x: f" pack {100 * x:.1f}%"),
    (K.MEMORY_ALLOCATED, lambda x: f" mem {x:.1f}GB"),
)


def console_fields(values: dict[str, Any]) -> str:
    """The metrics part of a console progress line (numbers only: other values are skipped)."""
    return "".join(fmt(values[key]) for key, fmt in _CONSOLE_FIELDS
                   if isinstance(values.get(key), (int, float)) and not isinstance(values.get(key), bool))


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
            kept = [line if line.endswith("\n") else line + "\n"
                    for line, rec in iter_records(self.path) if rec.get(K.BATCH, 0) <= resumed_at]
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
        rec = {K.KIND: kind, K.BATCH: int(ts.batch), K.TOKENS: int(ts.token), K.SAMPLES: int(ts.sample),
               K.TIME: round(time.time() - self._t0, 3)}
        rec.update({k: v for k, v in self._pending.items() if not k.startswith(K.COMPOSER_TIME_PREFIX)})
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

    def __init__(self, interval: int = 10, stream: TextIO | None = None, final_note: str = "", done_line: bool = True):
        super().__init__()
        self.interval = interval
        self.stream = stream or sys.stdout
        self.final_note = final_note  # said after the closing evaluation (what it was measured on)
        self.done_line = done_line  # the "done" line at the end of fit (a pretraining run prints its own)
        self.latest: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}
        self._t0: Optional[float] = None
        self._fit_done = False

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        for k, v in metrics.items():
            v = _plain(v)
            if v in ("nan", "inf", "-inf"):
                v = float(v)  # printed as nan/inf: a diverging run is shown, not a crash of the logger
            (self._eval if k.startswith(K.EVAL_PREFIX) else self.latest).__setitem__(k, v)

    def _print(self, line: str) -> None:
        if _rank0():
            print(line, file=self.stream, flush=True)

    def fit_start(self, state: State, logger: Logger) -> None:
        self._t0 = time.time()
        elapsed = state.get_elapsed_duration()
        self._frac0 = float(elapsed) if elapsed is not None else 0.0  # where this start began (a resume: > 0)
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
                parts.append(f"{100 * float(elapsed):.0f}%" + self._eta(float(elapsed)))
            line = " ".join(parts) + "]" + console_fields(v)
            self._print(line)
        if self._eval:  # the last batch's evaluation is the run's final one
            self._print_eval(f"[eval{' final' if done else ''} @ batch {batch}]", self.final_note if done else "")

    def _eta(self, frac: float) -> str:
        """`` eta 12m05s``: the rest of the run at this start's pace so far (empty when unknown or done)."""
        done = frac - getattr(self, "_frac0", 0.0)
        if self._t0 is None or done <= 0 or frac >= 1.0:
            return ""
        left = int((time.time() - self._t0) * (1.0 - frac) / done)
        h, rest = divmod(left, 3600)
        return f" eta {h}h{rest // 60:02d}m" if h else f" eta {rest // 60}m{rest % 60:02d}s"

    def _print_eval(self, line: str, note: str = "") -> None:
        e = self._eval
        for key, label in ((K.EVAL_LOSS, "loss"), (K.EVAL_ACCURACY, "acc"), (K.EVAL_PERPLEXITY, "ppl")):
            if key in e:
                line += f" {label} {e[key]:.4f}"
        self._print(line + note)
        self.latest.update(e)
        self._eval = {}

    def eval_end(self, state: State, logger: Logger) -> None:
        # the closing evaluation runs after FIT_END (when the run does not end on an eval_interval
        # boundary): no batch_checkpoint follows to print it
        if self._fit_done and self._eval:
            self._print_eval(f"[eval final @ batch {int(state.timestamp.batch)}]", self.final_note)

    def fit_end(self, state: State, logger: Logger) -> None:
        self._fit_done = True
        if self._t0 is not None and self.done_line:
            self._print(f"[flexbert] done: {int(state.timestamp.batch)} batches, "
                        f"{_fmt_tokens(int(state.timestamp.token))} tokens in {time.time() - self._t0:.1f}s")


def eval_note(subset_batches: int, split: Optional[str], run_dir: str, shards: str) -> str:
    """What the run's final evaluation was measured on, said after its numbers."""
    if subset_batches is None or subset_batches < 0:
        return f" (all of the {split} split)"
    return (f" (the first {subset_batches} batches of the {split} split: eval_subset_num_batches; "
            f"`flexbert eval-mlm --model {run_dir} --data {shards}` scores all of it)")


def done_line(state: State, seconds: float, checkpoint: Optional[str], run_dir: str, run_name: str, shards: str) -> str:
    """The last line of a pretraining run: what it did, where its checkpoint is, what to run next."""
    ts = state.timestamp
    head = f"[flexbert] done: {int(ts.batch)} batches, {_fmt_tokens(int(ts.token))} tokens in {seconds:.1f}s"
    if checkpoint is None:
        return f"{head}; no checkpoint saved (save_folder is empty)"
    return (f"{head}; checkpoint {checkpoint}; next: `flexbert export --run-dir {run_dir} --out hf/{run_name}` "
            f"(a Hugging Face folder) or `flexbert eval-mlm --model {run_dir} --data {shards}`")


def wandb_logged_in(environ: Mapping[str, str]) -> bool:
    """A wandb API key in the environment or in the netrc file wandb writes (``wandb login``)."""
    if environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    path = environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(environ: Optional[Mapping[str, str]] = None) -> tuple[Optional[str], Optional[str]]:
    """(the mode to give wandb, a line saying so): ``WANDB_MODE`` wins when set (None, None); a
    logged-in wandb goes online (None: wandb's own default); else offline, said in one line."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_MODE") or wandb_logged_in(env):
        return None, None
    return "offline", ("[flexbert] wandb: offline (no wandb login found: `wandb login`, WANDB_API_KEY or "
                       "WANDB_MODE=online sends runs to wandb); `wandb sync` uploads this one later")
