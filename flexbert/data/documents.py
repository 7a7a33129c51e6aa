"""Documents per rank per epoch: Streaming's ``StreamingDataset`` read through a torch
``DataLoader`` (workers decode shards), with the epoch protocol across ranks and the state to
resume exactly (docs/internals.md).  :class:`flexbert.data.loader.PackedLoader` turns these
documents into rows.

Exact resume without replay
    The state holds Streaming's position -- epoch and ``sample_in_epoch`` -- which Streaming
    resumes from without reading the skipped samples, and the documents fetched but not yet handed
    on.  Ranks consume documents at different rates (their documents differ in length), while
    Streaming resumes all ranks from one global sample count; the state therefore records the
    slowest rank's count and each rank skips the few documents it had fetched beyond that.
    ``state_dict()`` is collective when ``world_size > 1``.

Epochs across ranks
    Streaming starts an epoch with a barrier over every rank of a node; a rank whose epoch ends
    earlier (shorter documents) must not block there while the others still train.  So with
    ``world_size > 1`` the loader has ranks agree once per step, over a small gloo all-reduce
    (:class:`RankSync`), that all of them have exhausted the epoch before any starts the next.

The source is one ``StreamingDataset`` whose ``get_item`` yields ``(sample_id, input_ids)``:
:func:`flexbert.data.streams.build_dataset` builds it from data.local/remote or a mixture of
data.streams.  Resuming on another number of ranks: :meth:`RankDocuments.load_elastic_state`
(flexbert/data/elastic.py).
"""

from __future__ import annotations

import os
from collections import Counter, deque
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from streaming import StreamingDataset
from torch.utils.data import DataLoader

from flexbert.data.elastic import IdHistory
from flexbert.data.ragged import Doc, docs_from_state, docs_to_state, rechunk
from flexbert.data.tokenizer import SpecialTokens
from flexbert.env import dist_env


def _keep_batch(batch: list) -> list:
    """DataLoader collate: documents have different lengths, so keep the list as is."""
    return batch


def resolve_world(rank: Optional[int] = None, world_size: Optional[int] = None) -> tuple[int, int]:
    """(rank, world_size): given, else torch.distributed when initialized, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            env = dist_env()
            r, w = env.rank, env.world_size
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size


@contextmanager
def _streaming_world(rank: int, world_size: int):
    """Streaming reads the world from RANK / WORLD_SIZE / LOCAL_* when a dataset is built; make
    them agree with the rank we were given (single node assumed when LOCAL_WORLD_SIZE is unset)."""
    want = {"RANK": str(rank), "WORLD_SIZE": str(world_size)}
    local_ws = dist_env().ranks_per_node(world_size)
    if world_size % local_ws:
        local_ws = world_size
    want["LOCAL_WORLD_SIZE"] = str(local_ws)
    want["LOCAL_RANK"] = str(rank % local_ws)
    saved = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RankSync:
    """Tiny CPU collectives between ranks (a gloo group, created on first use)."""

    _group = None

    def __init__(self, world_size: int):
        self.world_size = world_size

    def _pg(self):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("world_size > 1 needs torch.distributed initialized before iterating the loader")
        if dist.get_backend() == "gloo":
            return None
        if RankSync._group is None:
            RankSync._group = dist.new_group(backend="gloo")
        return RankSync._group

    def max(self, values: list[int]) -> list[int]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._pg())
        return t.tolist()

    def gather(self, obj: Any) -> list:
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._pg())
        return out


def local_nodes(world_size: int) -> int:
    """Physical nodes of this run (ranks per node from LOCAL_WORLD_SIZE, one node when unset)."""
    return world_size // dist_env().ranks_per_node(world_size) or 1


class RankDocuments:
    """This rank's documents, epoch after epoch (``epochs=None``: forever), each cut to at most
    ``max_seq_len`` tokens.  :meth:`take` hands them out one at a time.  With ``sync_epochs`` the
    caller decides, with all ranks, when to call :meth:`next_epoch` and :meth:`open_epoch`."""

    def __init__(self, dataset: StreamingDataset, *, doc_batch_size: int, num_workers: int, max_seq_len: int,
                 special: SpecialTokens, epochs: Optional[int], rank: int, world_size: int,
                 split: str, sync_epochs: bool):
        self.dataset, self.split = dataset, split
        # sync_epochs: ranks start the next epoch together (training); False: each rank's pass ends alone
        self.sync_epochs = sync_epochs and world_size > 1
        self.num_canonical_nodes = dataset.num_canonical_nodes
        self.max_seq_len, self.special, self.epochs = max_seq_len, special, epochs
        self.rank, self.world_size = rank, world_size
        self.dataloader = DataLoader(
            dataset, batch_size=doc_batch_size, num_workers=num_workers, collate_fn=_keep_batch,
            persistent_workers=False, prefetch_factor=4 if num_workers else None,
        )
        self.sync = RankSync(world_size)
        self.initial_nodes = local_nodes(world_size)  # Streaming's initial_physical_nodes
        self.reset()

    def reset(self) -> None:
        self._it: Optional[Iterator] = None  # live DataLoader iterator of the current epoch
        self.epoch = 0  # Streaming epoch being read
        self.epoch_docs = 0  # documents received from Streaming this epoch (from its start)
        self.exhausted = False  # this rank has read all of the current epoch
        self.epochs_done = 0
        self.skip = 0  # documents to drop after a resume (fetched before the checkpoint)
        self.base = 0  # global sample position in the epoch where this reading started (resume)
        # sample ids to drop once: read beyond the common position by the ranks of a run with
        # another world size (an elastic resume), so already trained on or buffered
        self.ahead: Counter = Counter()
        self.recent = IdHistory()  # ids received this epoch (the newest), for an elastic resume
        self.pending: deque = deque()  # fetched documents not yet handed out
        self.finished = False  # no more documents will come (epoch limit reached)
        self.docs_fetched = 0  # documents received from Streaming since the reset (diagnostic)

    def take(self) -> Optional[Doc]:
        """The next document, or None when none is available now."""
        if not self.pending and not self._fetch():
            return None
        return self.pending.popleft()

    def _fetch(self) -> bool:
        """Move one DataLoader batch of documents into ``pending``; False when none is available now."""
        while True:
            if self.finished or self.exhausted:
                return False
            if self._it is None:
                if self.world_size > 1:
                    return False  # epochs are opened by open_epoch, on every rank at once
                self._it = iter(self.dataloader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.exhausted = True
                if not self.sync_epochs:
                    self.next_epoch()  # alone, or eval: no need to wait for other ranks
                continue
            self.docs_fetched += len(batch)
            for sample_id, ids in batch:
                self.epoch_docs += 1
                self.recent.add(sample_id)
                if self.skip:
                    self.skip -= 1
                    continue
                if self.ahead and self.ahead[sample_id] > 0:
                    self.ahead[sample_id] -= 1
                    continue
                for piece in rechunk(ids, self.max_seq_len, self.special.cls_id, self.special.sep_id):
                    self.pending.append((piece, sample_id))
            if self.pending:
                return True

    def open_epoch(self) -> None:
        """Start reading the current epoch.  Streaming begins an epoch with a barrier over all the
        ranks of a node, so with several ranks every rank must get here at the same step: at the
        first batch (fresh or resumed) and right after the ranks agreed to start the next epoch --
        never lazily when one rank's buffer happens to run low."""
        if self._it is None and not self.exhausted and not self.finished:
            self._it = iter(self.dataloader)
            self._fetch()  # the first next(): where Streaming's barrier is

    def next_epoch(self) -> None:
        """The current epoch is exhausted on every rank: move to the next, or finish."""
        if self.epoch_docs == 0 and self.epochs_done == 0 and not self.skip:
            raise RuntimeError(f"split '{self.split}' gave rank {self.rank} no documents")
        self.epochs_done += 1
        self.epoch += 1
        self.epoch_docs = self.base = 0
        self.ahead.clear()
        self.recent = IdHistory()
        self.exhausted = False
        if self.epochs is not None and self.epochs_done >= self.epochs:
            self.finished = True

    def state_dict(self, seed: int) -> dict:
        """Position and pending documents (collective when world_size > 1)."""
        counts = self.sync.gather((self.epoch, self.epoch_docs))
        if len({e for e, _ in counts}) != 1:
            raise RuntimeError(f"ranks are in different epochs: {counts}")  # cannot happen: epochs start together
        common = min(c for _, c in counts)
        beyond = self.recent.last(self.epoch_docs - common)
        return {
            "streaming": {
                "epoch": self.epoch,
                "sample_in_epoch": self.base + common * self.world_size,
                "num_canonical_nodes": self.num_canonical_nodes,
                "shuffle_seed": seed,
                "initial_physical_nodes": self.initial_nodes,
            },
            "skip": self.epoch_docs - common,
            # the ids behind "skip" plus those still to drop: what another world size must drop
            "ahead_ids": None if beyond is None else beyond + sorted(self.ahead.elements()),
            "epoch_exhausted": self.exhausted,
            "epochs_done": self.epochs_done,
            "finished": self.finished,
            "pending": docs_to_state(list(self.pending)),
        }

    def _load_position(self, state: dict) -> None:
        st = state["streaming"]
        # The sample order of every later epoch too follows the first run's canonical nodes:
        # Streaming applies the saved value only within the saved epoch, so set it on the dataset.
        self.num_canonical_nodes = self.dataset.num_canonical_nodes = st["num_canonical_nodes"]
        self.initial_nodes = st.get("initial_physical_nodes") or self.initial_nodes
        self.dataset.load_state_dict(dict(st))
        self.reset()
        self.epoch, self.base = st["epoch"], st["sample_in_epoch"]
        self.epochs_done = state["epochs_done"]
        self.finished = state["finished"]

    def load_state_dict(self, state: dict) -> None:
        """Resume on the same ranks: this rank's own state."""
        self._load_position(state)
        self.skip = state["skip"]
        self.ahead = Counter((state.get("ahead_ids") or [])[state["skip"]:])  # left from an elastic resume
        # Even a rank that had exhausted the epoch re-opens it (it yields nothing): Streaming starts
        # an epoch with a barrier over all ranks, so every rank must open it together.
        self.pending.extend(docs_from_state(state["pending"]))

    def load_elastic_state(self, states: list[dict]) -> list:
        """Resume from the states of a run with another number of ranks.  Streaming continues the
        global sample order from the common position; the documents the old ranks had read beyond
        it are dropped by id when they come again.  Returns the old ranks' pending documents,
        which the caller shares out between the new ranks."""
        positions = {(s["streaming"]["epoch"], s["streaming"]["sample_in_epoch"]) for s in states}
        if len(positions) != 1:
            raise RuntimeError(f"saved ranks disagree on the data position: {sorted(positions)}")
        if any(s.get("ahead_ids") is None for s in states):
            raise RuntimeError("this checkpoint cannot resume on another number of ranks: a rank had read "
                               f"more than {IdHistory.CAPACITY} documents beyond the others")
        self._load_position(states[0])
        self.ahead = Counter(i for s in states for i in s["ahead_ids"])
        return [d for s in states for d in docs_from_state(s["pending"])]
