"""The run folder: the one owner of what a training run leaves on disk, and of reading it back.

A run folder (``run_dir``, default ``runs/{run_name}``) holds:

``config.yaml``          the config the run's checkpoints were trained with (``data.microbatch_size``
                         resolved; written by train.py, kept across resumes: flexbert/train/run_identity.py)
``config_history.jsonl`` one line per start that changed a setting a resume may change (LR, schedule, ...)
``metrics.jsonl``        one record per batch (flexbert/train/loggers.py; keys: flexbert/train/metric_keys.py)
``microbatch.json``      the row size ``data.microbatch_size: auto`` chose (flexbert/train/microbatch.py)
``checkpoints/``         ``ba{N}.pt`` + ``latest.pt`` (or the configured ``save_folder``)
``.lock``                the process training in it (one writer per run folder)

Every consumer (weight tools, model loading, experiments, reports) reads through here, with no Composer import.
A checkpoint carries its run's identity (config, run folder, tokenizer fingerprint): found anywhere, it knows its model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import warnings
import zipfile
from typing import Iterator, Optional

import torch
import yaml

from flexbert.data.outputs import write_json
from flexbert.errors import FlexBertError
from flexbert.train.config import RunConfig, as_plain_dict, config_from_dict, load_run_config

CONFIG = "config.yaml"
HISTORY = "config_history.jsonl"
METRICS = "metrics.jsonl"
MICROBATCH = "microbatch.json"
DATA_IDENTITY = "data_identity.json"  # the run's tokenizer and shards (flexbert/data/fingerprint.py)
LOCK = ".lock"
IDENTITY = "AtomicCheckpointSaver"  # where a checkpoint keeps its run's identity (the saver's state)
CKPT_RE = re.compile(r"^ba(\d+)\.pt$")
LATEST = "latest.pt"
log = logging.getLogger(__name__)


class RunFolderError(FlexBertError, ValueError):
    """A run folder or checkpoint cannot be used; the message is one line naming the path."""


# --------------------------------------------------------------------------- JSON lines
def iter_records(path: str) -> Iterator[tuple[str, dict]]:
    """(raw line, record) of every complete line of a JSON-lines file; a line cut by a crash (or
    otherwise unreadable) is skipped."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield line, rec


def read_records(path: str) -> list[dict]:
    return [rec for _, rec in iter_records(path)]


# --------------------------------------------------------------------------- checkpoints
class CheckpointWarning(UserWarning):
    """A checkpoint file was skipped or renamed as corrupt."""


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
    """(batch, path) of every ``ba{N}.pt`` in ``folder``, newest first."""
    if not folder or not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, n)) for n in os.listdir(folder) if (m := CKPT_RE.match(n))]
    return sorted(found, reverse=True)


def checkpoint_problem(path: str, full_check: bool = True) -> Optional[str]:
    """None if ``path`` looks like an intact torch.save archive, else why not."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):
                return "no data.pkl inside"
            if full_check:
                bad = zf.testzip()
                if bad is not None:
                    return f"corrupt member {bad}"
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a complete checkpoint ({type(e).__name__}: {e})"
    return None


def find_resume_checkpoint(folder: Optional[str]) -> Optional[str]:
    """The newest intact checkpoint in ``folder``; truncated or corrupt ones are skipped with a warning."""
    for batch, path in list_checkpoints(folder or ""):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        msg = f"skipping checkpoint {path}: {problem}; trying the previous one"
        warnings.warn(msg, CheckpointWarning, stacklevel=2)
        log.warning(msg)
    return None


def load_checkpoint(path: str) -> dict:
    """A Composer checkpoint as a dict, after the integrity check autoresume applies (every member's
    CRC): a truncated or overwritten file is refused, never half-read."""
    if not os.path.exists(path):
        raise RunFolderError(f"checkpoint {path} does not exist")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise RunFolderError(f"cannot read checkpoint {path}: {problem}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        raise RunFolderError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state"), dict) or "model" not in ckpt["state"]:
        raise RunFolderError(f"{path} is not a FlexBERT/Composer checkpoint (no state.model)")
    return ckpt


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """FlexBertForMaskedLM names of a checkpoint's weights: the ComposerModel's ``model.`` prefix
    and compiled modules' ``_orig_mod.`` removed."""
    out = {}
    for k, v in ckpt["state"]["model"].items():
        k = k.replace("_orig_mod.", "")
        out[k[len("model."):] if k.startswith("model.") else k] = v
    return out


def checkpoint_model_state(path: str) -> dict[str, torch.Tensor]:
    return model_state(load_checkpoint(path))


def load_weights(model: torch.nn.Module, state: dict, what: str, allow_missing: tuple[str, ...] = ("decoder.weight",)) -> None:
    """``model.load_state_dict(state)`` or RunFolderError in one line: names that do not fit, or
    the first tensor whose shape differs (a config whose sizes are not the checkpoint's)."""
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise RunFolderError(f"{what}: {k} has shape {tuple(v.shape)} there but {tuple(own[k].shape)} in the "
                                 "configured model (the config's sizes are not the checkpoint's)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(allow_missing)]
    if missing or unexpected:
        raise RunFolderError(f"{what}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def identity(ckpt: dict) -> dict:
    """What a checkpoint says about its run: ``{"run_dir", "config", "tokenizer"}`` (empty for
    checkpoints written before FlexBERT recorded it)."""
    callbacks = ckpt.get("state", {}).get("callbacks") or {}
    found = callbacks.get(IDENTITY) if isinstance(callbacks, dict) else None
    return found if isinstance(found, dict) else {}


def progress(ckpt: dict) -> tuple[Optional[int], Optional[int]]:
    """(tokens, batches) on a checkpoint's clock; (None, None) when it has none."""
    try:
        ts = ckpt["state"]["timestamp"]["Timestamp"]
        return int(ts["token"]), int(ts["batch"])
    except (KeyError, TypeError, ValueError):
        return None, None


def with_microbatch(cfg: RunConfig, microbatch_size: int) -> RunConfig:
    """A copy of ``cfg`` at this microbatch size (``cfg`` itself is left unchanged)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, microbatch_size=int(microbatch_size)))


# --------------------------------------------------------------------------- the folder
@dataclasses.dataclass
class RunFolder:
    path: str

    @classmethod
    def of(cls, cfg: RunConfig) -> "RunFolder":
        return cls(cfg.resolved_run_dir)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG)

    @property
    def metrics_path(self) -> str:
        return self.file(METRICS)

    def has_config(self) -> bool:
        return os.path.exists(self.config_path)

    # -- config
    def load_config(self, overrides: Optional[list[str]] = None) -> RunConfig:
        """The config the run was trained with (``microbatch_size: auto`` resolved)."""
        if not self.has_config():
            why = "does not exist" if not os.path.exists(self.path) else "is a file" if os.path.isfile(self.path) else f"has no {CONFIG}"
            raise RunFolderError(f"{self.path}: {why} (give a train.py run folder: the run_dir a run wrote)")
        return self.resolved(load_run_config(self.config_path, overrides, where=self.config_path))

    def resolved(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with ``data.microbatch_size: auto`` replaced by this run's recorded choice."""
        if cfg.data.microbatch_size != "auto":
            return cfg
        record = self.microbatch_record()
        if record is None:
            raise RunFolderError(f"{self.path}: data.microbatch_size is auto and no {MICROBATCH} records the choice "
                                 "(the run never started training)")
        return with_microbatch(cfg, record["microbatch_size"])

    def write_config(self, cfg: RunConfig) -> None:
        """``config.yaml`` := ``cfg`` (atomic; rank 0 decides when: flexbert/train/run_identity.py)."""
        os.makedirs(self.path, exist_ok=True)
        tmp = self.file(f".{CONFIG}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            yaml.safe_dump(as_plain_dict(cfg), f, sort_keys=False)
        os.replace(tmp, self.config_path)

    def _json(self, name: str, default=None):
        if not os.path.exists(self.file(name)):
            return default
        with open(self.file(name)) as f:
            return json.load(f)

    # -- microbatch choice
    def microbatch_record(self) -> Optional[dict]:
        return self._json(MICROBATCH)

    def write_microbatch_record(self, record: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file(MICROBATCH), record)

    def data_identity(self) -> dict:
        """What the run trained on: ``{"tokenizer": fingerprint, "shards": digest}`` ({} for runs
        older than the record; a value is None where it was unknown)."""
        return self._json(DATA_IDENTITY, {})

    def write_data_identity(self, ident: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file(DATA_IDENTITY), ident)

    # -- checkpoints
    def save_folder(self, cfg: Optional[RunConfig] = None) -> Optional[str]:
        """Where the run's checkpoints are: its ``save_folder``, else ``{run_dir}/checkpoints``."""
        cfg = cfg or (load_run_config(self.config_path) if self.has_config() else None)
        if cfg is None or cfg.save_folder is None or cfg.remote_save_folder:  # (an object store's local copies)
            return os.path.join(self.path, "checkpoints")
        return cfg.save_folder or None

    def checkpoints(self, cfg: Optional[RunConfig] = None) -> list[tuple[int, str]]:
        """(batch, path) of every checkpoint, newest first."""
        return list_checkpoints(self.save_folder(cfg) or "")

    def newest_checkpoint(self, cfg: Optional[RunConfig] = None) -> str:
        """The newest intact checkpoint (corrupt newer ones are skipped with a warning)."""
        folder = self.save_folder(cfg)
        found = find_resume_checkpoint(folder) if folder else None
        if found is None:
            raise RunFolderError(f"{self.path}: no intact checkpoint in {folder or '(saving was off: save_folder is empty)'}")
        return found

    def metrics(self) -> list[dict]:
        """``metrics.jsonl`` records in order (a line cut by a crash is skipped)."""
        return read_records(self.metrics_path)


def run_of_checkpoint(path: str, ckpt: Optional[dict] = None) -> Optional[RunFolder]:
    """The run folder a checkpoint file belongs to: the one it records, else the folder above a
    ``checkpoints/`` folder holding a ``config.yaml`` (older checkpoints); None if neither."""
    recorded = identity(ckpt).get("run_dir") if ckpt is not None else None
    if recorded and os.path.exists(os.path.join(recorded, CONFIG)):
        return RunFolder(recorded)
    above = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return RunFolder(above) if os.path.exists(os.path.join(above, CONFIG)) else None


def checkpoint_config(path: str, ckpt: dict) -> RunConfig:
    """The config a checkpoint was trained with: the one it carries, else its run folder's."""
    recorded = identity(ckpt).get("config")
    if recorded:
        return config_from_dict(recorded, where=f"the config inside {path}")
    run = run_of_checkpoint(path, ckpt)
    if run is None:
        raise RunFolderError(f"checkpoint {path}: no config inside and no {CONFIG} next to its folder (pass --config)")
    return run.load_config()
