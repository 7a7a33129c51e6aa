"""Crash-safe checkpoints and the choice of what to resume from.

Composer's own saver writes the checkpoint straight into its final name and then replaces the
``latest`` symlink with a remove + create; a kill during either leaves a truncated file or no
pointer at all.  ``AtomicCheckpointSaver`` instead writes ``.tmp-ba{N}.pt``, fsyncs it, and
``os.replace``s it into ``ba{N}.pt`` (a rename is atomic on POSIX), then swaps the ``latest.pt``
symlink the same way.  Resume never trusts the pointer: ``find_resume_checkpoint`` lists
``ba*.pt`` newest first and takes the first one whose zip archive is intact (torch.save writes a
zip whose central directory is at the very end, so any truncation is caught; CRCs catch the
rest), warning about every file it skips.

An object-store ``save_folder`` (``s3://bucket/run``, as Composer's remote upload takes it) keeps
the local copies in ``{run_dir}/checkpoints`` and uploads every checkpoint there once it is
written (rank 0, before training goes on); rotation (``save_num_to_keep``) applies to the local
copies only, the store keeps every checkpoint, as Composer's does.  A run with no local checkpoint
(a fresh machine) resumes from the newest intact one in the store (``fetch_resume_checkpoint``).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional

from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import checkpoint as composer_checkpoint
from composer.utils import dist
from composer.utils.misc import create_interval_scheduler

from flexbert.data.remote import download, join, list_keys, upload_tree
from flexbert.train import metric_keys as K
from flexbert.train.run_folder import LATEST, CheckpointWarning, checkpoint_problem, find_resume_checkpoint, list_checkpoints  # noqa: F401

log = logging.getLogger(__name__)

def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_symlink(target: str, link: str) -> None:
    tmp = f"{link}.tmp{os.getpid()}"
    try:
        os.remove(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


class AtomicCheckpointSaver(Callback):
    """Save the full training state every ``interval`` (and at the end) without ever exposing a
    partial file; keep the newest ``num_to_keep``.

    Uses Composer's ``save_checkpoint`` for the content (model, optimizer, schedulers, callbacks
    such as the data state, timestamp, RNG of every rank); only rank 0 writes a file.
    """

    def __init__(self, folder: str, interval: str | int = "1000ba", num_to_keep: int = -1,
                 identity: Optional[dict] = None, remote: Optional[str] = None):
        self.folder = folder
        self.remote = remote  # an object-store URL every checkpoint is uploaded to
        self.identity = identity or {}  # the run's config, folder and tokenizer: every checkpoint carries them
        self.num_to_keep = num_to_keep
        self.save_interval = create_interval_scheduler(interval, include_end_of_training=True)
        self.saved: list[str] = []
        self._verified: set[str] = set()  # checkpoints whose CRCs were read back once
        self.last_saved_batch: Optional[int] = None
        self.enabled = True  # the NaN guard turns saving off once the weights are bad

    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0:
            os.makedirs(self.folder, exist_ok=True)
            # leftovers of a write that was killed are never picked up, but clear them
            for name in os.listdir(self.folder):
                if name.startswith(".tmp-") or name.startswith(LATEST + ".tmp"):
                    try:
                        os.remove(os.path.join(self.folder, name))
                    except OSError:
                        pass
            self.saved = [p for _, p in sorted(list_checkpoints(self.folder))]
        dist.barrier()

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.enabled and self.save_interval(state, Event.BATCH_CHECKPOINT):
            self.save(state, logger)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.enabled and self.save_interval(state, Event.EPOCH_CHECKPOINT):
            self.save(state, logger)

    def save(self, state: State, logger: Logger) -> Optional[str]:
        batch = int(state.timestamp.batch)
        if batch == self.last_saved_batch:
            return None
        self.last_saved_batch = batch
        final = self.path_of(batch)
        tmp = os.path.join(self.folder, f".tmp-ba{batch}.pt")  # must end in .pt for Composer
        written = composer_checkpoint.save_checkpoint(state, filename=tmp)  # all ranks; rank 0 writes
        if dist.get_global_rank() == 0 and written:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.folder)
            atomic_symlink(os.path.basename(final), os.path.join(self.folder, LATEST))
            _fsync_dir(self.folder)
            if final not in self.saved:
                self.saved.append(final)
            if self.remote:
                upload_tree(self.folder, self.remote, only=[os.path.basename(final)])
            self._rotate()
            logger.log_metrics({K.CHECKPOINT_BATCH: batch})
            log.info("saved checkpoint %s", final)
        dist.barrier()
        return final

    def path_of(self, batch: int) -> str:
        return os.path.join(self.folder, f"ba{batch}.pt")

    def _rotate(self) -> None:
        """Keep the newest ``num_to_keep`` INTACT checkpoints: each is CRC-checked once before it
        counts; a corrupt one is renamed ``*.corrupt`` (resume never picks it), never counted."""
        if self.num_to_keep < 0:
            return
        intact: list[str] = []
        for path in reversed(self.saved):  # newest first
            if path not in self._verified:
                problem = checkpoint_problem(path)
                if problem is not None:
                    msg = f"checkpoint {path} is corrupt ({problem}); renamed to {os.path.basename(path)}.corrupt"
                    warnings.warn(msg, CheckpointWarning, stacklevel=2)
                    log.warning(msg)
                    if os.path.exists(path):
                        os.replace(path, path + ".corrupt")
                    continue
                self._verified.add(path)
            intact.append(path)
        keep = intact[: self.num_to_keep]
        for path in [p for p in self.saved if p not in keep]:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        self.saved = [p for p in self.saved if p in keep]

    # The list of saved files is re-read from the folder at fit start.  What is serialised is the
    # run's identity (flexbert/train/run_folder.py reads it back); loading it changes nothing.
    def state_dict(self) -> dict:
        return dict(self.identity)

    def load_state_dict(self, state: dict) -> None:
        pass


def find_saver(state: State) -> Optional[AtomicCheckpointSaver]:
    """The run's checkpoint saver among the Trainer's callbacks (None when saving is off)."""
    return next((c for c in state.callbacks if isinstance(c, AtomicCheckpointSaver)), None)


def fetch_resume_checkpoint(remote: str, folder: str) -> Optional[str]:
    """The newest intact checkpoint in the object store ``remote``, downloaded into ``folder``
    (newer ones that are cut or corrupt are skipped with a warning, as locally); None if none."""
    names = [os.path.basename(k) for k in list_keys(remote, limit=10_000)]
    batches = sorted((int(n[2:-3]), n) for n in names if n.startswith("ba") and n.endswith(".pt") and n[2:-3].isdigit())
    for _, name in reversed(batches):
        local = os.path.join(folder, name)
        download(join(remote, name), local)
        if find_resume_checkpoint(folder) == local:
            log.info("resuming from %s (fetched from %s)", local, remote)
            return local
    return None
