"""A run folder keeps the config its checkpoints were trained with.

Rerunning train.py in a run folder that has trained (a checkpoint or a metrics record exists)
compares the new config with the run's current one, key by key:

* keys a resume may change (``RESUMABLE``: learning rate and optimizer, schedule, duration,
  intervals, loggers, callbacks, device, precision, compile, data reading knobs, where the data
  is read from when it is the same data) are allowed; the change is appended to
  ``config_history.jsonl`` (with the full new config) once training actually continues, and
  ``config.yaml`` stays what the run started with;
* any other difference (the model, the tokenizer, the data, the row shape, masking, seed ...)
  refuses in one line naming the keys: such a run belongs in a new run folder.

A run folder moved (or copied whole) to another path resumes there: the folder's own record
(config.yaml, checkpoints, data identity) says which run it is, so ``run_dir`` - and a
``save_folder`` that moved along with it - differing from the recorded one is a move, noted in
one line and in the history, not another run.

A run that trains nothing (already complete) changes nothing.  A folder that never trained gets the
new config.  The run's current config is the last history entry's, else ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional

import yaml

from flexbert.train.config import RunConfig, as_plain_dict
from flexbert.train.run_folder import HISTORY, RunFolder, RunFolderError, iter_records

# Dotted keys (or prefixes ending in ".") that a resume may change.
RESUMABLE = (
    "run_name", "optimizer.", "scheduler", "max_duration", "eval_interval", "eval_subset_num_batches",
    "save_interval", "save_num_to_keep", "autoresume", "init_from", "load_path", "load_weights_only",
    "load_optimizer_state", "reset_time", "precision", "device", "compile", "compile_mode", "dist_timeout", "dist_init_timeout",
    "loggers.",
    "callbacks.", "activation_checkpointing", "profiler.", "parallelism", "fsdp.",
    "data.num_workers", "data.predownload", "data.cache_limit", "data.download_timeout", "data.epochs",
    "data.return_doc_ids", "data.eval_split", "data.eval_mlm_probability", "data.eval_seed", "data.eval_rows_per_batch",
    "data.local", "data.remote", "data.tokenizer", "data.streams",  # where: the data itself is checked by identity
)


class ConfigChanged(RunFolderError):
    """The rerun would train another model or other data in this folder (one line)."""


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or (prefix in ("scheduler", "data.streams") and d):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out or {prefix: d}


def differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ; a key the old config predates counts at its default (a run started
    before ``objective`` existed trained with ``objective: mlm``)."""
    a, b = flatten(old), flatten(new)
    for k, v in flatten(as_plain_dict(RunConfig())).items():
        a.setdefault(k, v)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) or key.startswith(r + ".") for r in RESUMABLE)


def has_trained(run: RunFolder, cfg: Optional[RunConfig] = None) -> bool:
    return bool(run.checkpoints(cfg)) or bool(run.metrics())


def current_config(run: RunFolder) -> Optional[dict]:
    """The config the run trains with now: the last history entry's, else config.yaml's."""
    last = None
    for _, rec in iter_records(run.file(HISTORY)):
        last = rec.get("config") or last
    if last is not None:
        return last
    if not run.has_config():
        return None
    with open(run.config_path) as f:
        return yaml.safe_load(f) or {}


def check_same_data(run: RunFolder, cfg: RunConfig, data: Optional[dict]) -> None:
    """The data given now (``{"tokenizer": fp, "shards": digest}``) must be what the run trained
    on: moved data paths are fine, other shards or another tokenizer are not.  Unknown on either
    side (None, older runs, shards only in an object store) is not checked."""
    recorded = run.data_identity()
    where = ", ".join(str(l or r) for l, r in cfg.data.sources())
    for key, what in (("tokenizer", "tokenizer"), ("shards", "shards")):
        old, new = recorded.get(key), (data or {}).get(key)
        if old and new and old != new:
            raise ConfigChanged(f"{run.path} was trained on other data: its {what} {old}, the data given now "
                                f"({where}) has {what} {new}; use a new run_dir for other data")


def check_rerun(run: RunFolder, cfg: RunConfig, data: Optional[dict] = None) -> Optional[dict[str, tuple[Any, Any]]]:
    """None: the folder never trained (write the config as new).  Else the allowed changes against
    the run's current config ({} when none); raises ConfigChanged on any other difference, and
    when ``data`` (the data's identity now) is not what the run trained on."""
    old = current_config(run)
    if old is None or not has_trained(run, cfg):
        return None
    check_same_data(run, cfg, data)
    record = run.microbatch_record()
    if record:  # compare row sizes as resolved (older runs wrote config.yaml before resolving auto)
        if (old.get("data") or {}).get("microbatch_size") == "auto":
            old["data"]["microbatch_size"] = int(record["microbatch_size"])
        cfg = run.resolved(cfg)
    diff = differences(old, as_plain_dict(cfg))
    refused = [k for k in diff if not resumable(k)]
    if refused:
        moved = moved_keys(run, old, cfg, diff)
        refused = [k for k in refused if k not in moved]
    if refused:
        shown = ", ".join(f"{k} ({diff[k][0]!r} -> {diff[k][1]!r})" for k in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        raise ConfigChanged(f"{run.path} was trained with other settings: {shown}{more}; a resume may change only "
                            "the LR, schedule, duration, intervals, loggers and such (docs/training.md, 'Run folders'): "
                            "use a new run_dir for another model or data")
    return diff


def _abs(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(path) if path else path


def moved_keys(run: RunFolder, old: dict, cfg: RunConfig, diff: dict) -> tuple[str, ...]:
    """``run_dir`` (and a save folder that lay inside it and moved along) when this folder's record
    names another path for the run: the folder was moved, and this is the same run (one line said).
    A save folder counts as moved along when it stands where it stood relative to the run folder."""
    if "run_dir" not in diff or os.path.abspath(run.path) != _abs(cfg.resolved_run_dir):
        return ()
    was = old.get("run_dir")
    if _abs(was) == _abs(cfg.run_dir):
        return ("run_dir",)  # the same place written another way (relative / absolute)
    keys: tuple[str, ...] = ("run_dir",)
    old_save, new_save = old.get("save_folder"), cfg.save_folder
    if "save_folder" in diff and old_save and new_save and was and \
            os.path.relpath(_abs(old_save), _abs(was)) == os.path.relpath(_abs(new_save), run.path):
        keys += ("save_folder",)
    print(f"[flexbert] {run.path} holds the run recorded at {was} (moved): resuming it here, its config, "
          "checkpoints and data identity unchanged", file=sys.stderr, flush=True)
    return keys


def record_start(run: RunFolder, cfg: RunConfig, changes: Optional[dict], batch: int,
                 data: Optional[dict] = None) -> None:
    """Write what this start trains with: the config of a new run (and its data's identity), or a
    history entry for a resume that changed something (rank 0, once training goes ahead)."""
    if data and (changes is None or not run.data_identity()):
        run.write_data_identity(data)
    if changes is None:
        run.write_config(cfg)
        return
    if not changes:
        return
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_at_batch": batch,
             "changes": {k: list(v) for k, v in changes.items()}, "config": as_plain_dict(cfg)}
    with open(run.file(HISTORY), "a") as f:
        f.write(json.dumps(entry) + "\n")
