"""MDS shards -> packed, masked device batches ``{"rows": [row, ...]}`` (docs/internals.md).

Documents are read by Streaming's ``StreamingDataset`` through a torch ``DataLoader`` (workers
decode shards), then packed and masked in the main process: packing is cheap (far above any
model's token rate, scripts/bench_data.py) and keeping it here makes its state easy to save.

Exact resume without replay
    ``state_dict()`` holds (a) Streaming's position -- epoch and ``sample_in_epoch`` -- which
    Streaming resumes from without reading the skipped samples, and (b) everything fetched but not
    yet emitted: the packer's buffered documents themselves, plus the counters the masks and the
    batch-size schedule derive from.  Masks are a pure function of (seed, global row index), so
    no RNG state is needed.  Ranks consume documents at different rates (their documents differ
    in length), while Streaming resumes all ranks from one global sample count; the state
    therefore records the slowest rank's count and each rank skips the few documents it had
    fetched beyond that.  ``state_dict()`` is collective when ``world_size > 1``.

Epochs across ranks
    Streaming starts an epoch with a barrier over every rank of a node; a rank whose epoch ends
    earlier (shorter documents) must not block there while the others still train.  So with
    ``world_size > 1`` ranks agree once per step, over a small gloo all-reduce, that all of them
    have exhausted the epoch before any starts the next; a rank with nothing left meanwhile
    packs from its buffer and, at worst, yields a padding-only row (``num_masked == 0``).
"""

from __future__ import annotations

import os
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import numpy as np
import torch
from streaming import StreamingDataset
from torch.utils.data import DataLoader

from flexbert.data.config import DataConfig
from flexbert.data.masking import MLMMasker
from flexbert.data.packing import BestFitPacker, make_row
from flexbert.data.tokenizer import SpecialTokens
from flexbert.data.warmup import BatchSizeWarmup, warmup_from_config

STATE_VERSION = 1


# --------------------------------------------------------------------------- Streaming glue
class DocDataset(StreamingDataset):
    """Yields ``(sample_id, input_ids)``: the global sample id identifies the document."""

    def get_item(self, sample_id: int, retry: int = 7) -> Any:
        return int(sample_id), super().get_item(sample_id, retry)["input_ids"]


def _keep_batch(batch: list) -> list:
    """DataLoader collate: documents have different lengths, so keep the list as is."""
    return batch


def resolve_world(rank: Optional[int] = None, world_size: Optional[int] = None) -> tuple[int, int]:
    """(rank, world_size): given, else torch.distributed when initialized, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
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
    local_ws = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
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


class _RankSync:
    """Tiny CPU collectives between ranks (a gloo group, created on first use)."""

    _group = None

    def __init__(self, world_size: int):
        self.world_size = world_size

    def _pg(self):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("world_size > 1 needs torch.distributed initialized before iterating the loader")
        if dist.get_backend() == "gloo":
            return None
        if _RankSync._group is None:
            _RankSync._group = dist.new_group(backend="gloo")
        return _RankSync._group

    def max(self, values: list[int]) -> list[int]:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._pg())
        return t.tolist()

    def gather(self, obj: Any) -> list:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._pg())
        return out


# --------------------------------------------------------------------------- the loader
class PackedLoader:
    """Iterable of device batches.  ``training=True``: batch-size warmup, train masking, state;
    ``training=False``: one finite pass per ``iter()``, fixed eval masks, restarts each time."""

    def __init__(self, cfg: DataConfig, split: str, *, training: bool, rank: Optional[int] = None,
                 world_size: Optional[int] = None, seed: Optional[int] = None):
        cfg.validate()
        self.cfg = cfg
        self.split = split
        self.training = training
        self.rank, self.world_size = resolve_world(rank, world_size)
        self.seed = cfg.seed if seed is None else seed
        self.special = SpecialTokens.from_dir(cfg.tokenizer_dir())
        self.row_tokens = cfg.row_tokens
        self.max_seq_len = cfg.max_seq_len
        if training:
            self.warmup: Optional[BatchSizeWarmup] = warmup_from_config(cfg, self.world_size)
            self.masker = MLMMasker(self.special, cfg.mlm_probability, self.seed)
        else:
            self.warmup = None
            self.masker = MLMMasker(self.special, cfg.eval_mlm_probability, cfg.eval_seed)
        self.packer = BestFitPacker(self.row_tokens, self.max_seq_len, cfg.packer_buffer_size)
        self._sync = _RankSync(self.world_size)
        self._build_dataset()
        self._reset_position()
        self.last_batch_stats: dict = {}

    # ----------------------------------------------------------------- construction
    def _build_dataset(self) -> None:
        cfg = self.cfg
        if not cfg.remote and not os.path.isfile(os.path.join(cfg.local, self.split, "index.json")):
            raise FileNotFoundError(f"no MDS index at {os.path.join(cfg.local, self.split, 'index.json')} "
                                    "(write shards with data_prep/tokenize_to_mds.py)")
        nodes = self.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size) or 1) or 1
        self.num_canonical_nodes = cfg.num_canonical_nodes or nodes
        kwargs = dict(
            local=cfg.local or None, remote=cfg.remote, split=self.split,  # None: Streaming picks a cache dir
            batch_size=cfg.doc_batch_size,  # must equal the DataLoader's: Streaming partitions by it
            shuffle=cfg.shuffle and self.training, shuffle_seed=self.seed, shuffle_algo=cfg.shuffle_algo,
            shuffle_block_size=cfg.shuffle_block_size, num_canonical_nodes=self.num_canonical_nodes,
            predownload=cfg.predownload, cache_limit=cfg.cache_limit, download_timeout=cfg.download_timeout,
        )
        with _streaming_world(self.rank, self.world_size):
            self.dataset = DocDataset(**kwargs)
        self.dataloader = DataLoader(
            self.dataset, batch_size=cfg.doc_batch_size, num_workers=cfg.num_workers, collate_fn=_keep_batch,
            persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None,
        )

    def _reset_position(self) -> None:
        self._it: Optional[Iterator] = None  # live DataLoader iterator of the current epoch
        self._epoch = 0  # Streaming epoch being read
        self._epoch_docs = 0  # documents received from Streaming this epoch (from its start)
        self._epoch_exhausted = False
        self._epochs_done = 0
        self._skip = 0  # documents to drop after a resume (fetched before the checkpoint)
        self._pending: deque = deque()  # fetched documents not yet in the packer
        self._finished = False  # no more documents will come (epoch limit reached / eval pass done)
        self.steps = 0
        self.rows_global = 0  # rows emitted by all ranks (mask seeds derive from it)
        self.tokens_seen = 0  # global sequence-slot tokens (batch-size warmup counter)
        self.real_tokens = 0  # non-pad tokens emitted by this rank
        self.docs_fetched = 0  # documents received from Streaming by this object (diagnostic)
        self._started = False
        self.packer.load_state_dict({"tokens": torch.zeros(0, dtype=torch.int32),
                                     "lengths": torch.zeros(0, dtype=torch.int32), "doc_ids": torch.zeros(0, dtype=torch.int64)})

    # ----------------------------------------------------------------- documents
    def _split_long(self, ids: np.ndarray) -> list[np.ndarray]:
        """Shards written with a larger max_seq_len: re-chunk, each piece wrapped in [CLS] .. [SEP]."""
        ids = ids.astype(np.int64)
        if len(ids) <= self.max_seq_len:
            return [ids]
        s = self.special
        body = ids[1:-1] if len(ids) >= 2 and ids[0] == s.cls_id and ids[-1] == s.sep_id else ids
        cap = self.max_seq_len - 2
        return [np.concatenate(([s.cls_id], body[i : i + cap], [s.sep_id])) for i in range(0, len(body), cap)]

    def _fetch(self) -> bool:
        """Move one DataLoader batch of documents into ``_pending``; False when none is available now."""
        while True:
            if self._finished or self._epoch_exhausted:
                return False
            if self._it is None:
                if self.world_size > 1:
                    return False  # epochs are opened by _open_epoch, on every rank at once
                self._it = iter(self.dataloader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self._epoch_exhausted = True
                if self.world_size == 1 or not self.training:
                    self._next_epoch()  # alone, or eval: no need to wait for other ranks
                continue
            self.docs_fetched += len(batch)
            for sample_id, ids in batch:
                self._epoch_docs += 1
                if self._skip:
                    self._skip -= 1
                    continue
                for piece in self._split_long(ids):
                    self._pending.append((piece, sample_id))
            if self._pending:
                return True

    def _open_epoch(self) -> None:
        """Start reading the current epoch.  Streaming begins an epoch with a barrier over all the
        ranks of a node, so with several ranks every rank must get here at the same step: at the
        first batch (fresh or resumed) and right after the ranks agreed to start the next epoch --
        never lazily when one rank's buffer happens to run low."""
        if self._it is None and not self._epoch_exhausted and not self._finished:
            self._it = iter(self.dataloader)
            self._fetch()  # the first next(): where Streaming's barrier is

    def _next_epoch(self) -> None:
        """The current epoch is exhausted on every rank: move to the next, or finish."""
        if self._epoch_docs == 0 and self._epochs_done == 0 and not self._skip:
            raise RuntimeError(f"split '{self.split}' gave rank {self.rank} no documents")
        self._epochs_done += 1
        self._epoch += 1
        self._epoch_docs = 0
        self._epoch_exhausted = False
        limit = self.cfg.epochs if self.training else 1
        if limit is not None and self._epochs_done >= limit:
            self._finished = True

    def _fill(self) -> None:
        while not self.packer.full():
            if not self._pending and not self._fetch():
                return
            ids, doc_id = self._pending.popleft()
            self.packer.add(ids, doc_id)

    # ----------------------------------------------------------------- rows and batches
    def _row(self, docs: list, global_index: int) -> dict:
        r = make_row(docs, self.row_tokens, self.max_seq_len, self.special.pad_id)
        ids, labels, n_masked = self.masker(r["input_ids"], global_index)
        row = {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(labels),
            "cu_seqlens": r["cu_seqlens"],
            "max_seqlen": r["max_seqlen"],
            "num_tokens": r["num_tokens"],
            "num_masked": int(n_masked),
        }
        if self.cfg.return_doc_ids:
            row["doc_ids"] = torch.tensor(r["doc_ids"], dtype=torch.int64)
        return row

    def rows_per_step(self) -> int:
        if self.warmup is None:
            return self.cfg.eval_rows_per_batch
        return self.warmup.rows_per_rank_at(self.tokens_seen, self.cfg.microbatch_size, self.world_size)

    def _next_batch(self) -> Optional[dict]:
        n_rows = self.rows_per_step()
        self._open_epoch()
        self._fill()
        if self.world_size > 1:
            # one tiny all-reduce per step: (does any rank still read this epoch, does any have data)
            waiting = int(self._epoch_exhausted)
            any_reading, any_data = self._sync.max([1 - waiting, int(len(self.packer) > 0)])
            if waiting and not any_reading and self.training:
                self._next_epoch()  # every rank exhausted the epoch: all start the next together
                self._open_epoch()
                self._fill()
                any_data = self._sync.max([int(len(self.packer) > 0)])[0]
            if not any_data and (self._finished or not self.training):
                return None
        elif len(self.packer) == 0:
            return None
        rows = []
        first = self.rows_global + self.rank * n_rows
        for j in range(n_rows):
            docs = self.packer.pop_row(refill=self._fill)
            if not docs and rows:
                break  # the data ran out mid-step (last step of a finite pass)
            rows.append(self._row(docs, first + j))  # docs == []: a padding-only row
        self.steps += 1
        self.rows_global += n_rows * self.world_size
        self.tokens_seen += n_rows * self.world_size * self.row_tokens
        real = sum(r["num_tokens"] for r in rows)
        self.real_tokens += real
        self.last_batch_stats = {
            "rows": len(rows),
            "num_tokens": real,
            "num_masked": sum(r["num_masked"] for r in rows),
            "packing_efficiency": real / (len(rows) * self.row_tokens),
            "global_batch_sequences": n_rows * self.world_size * self.cfg.microbatch_size,
            "tokens_seen": self.tokens_seen,
            "epoch": self._epoch,
        }
        return {"rows": rows}

    def __iter__(self) -> Iterator[dict]:
        if not self.training:
            self._reset_position()  # every evaluation is the same pass with the same masks
        self._started = True
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            yield batch

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """This rank's position (collective when world_size > 1: every rank must call it)."""
        if not self.training:
            return {}
        counts = self._sync.gather((self._epoch, self._epoch_docs))
        if len({e for e, _ in counts}) != 1:
            raise RuntimeError(f"ranks are in different epochs: {counts}")  # cannot happen: epochs start together
        common = min(c for _, c in counts)
        pending = list(self._pending)
        return {
            "version": STATE_VERSION,
            "streaming": {
                "epoch": self._epoch,
                "sample_in_epoch": common * self.world_size,
                "num_canonical_nodes": self.num_canonical_nodes,
                "shuffle_seed": self.seed,
                "initial_physical_nodes": self.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size) or 1) or 1,
            },
            "skip": self._epoch_docs - common,
            "epoch_exhausted": self._epoch_exhausted,
            "epochs_done": self._epochs_done,
            "finished": self._finished,
            "packer": self.packer.state_dict(),
            "pending": {
                "tokens": torch.from_numpy(np.concatenate([p[0] for p in pending]).astype(np.int32)) if pending else torch.zeros(0, dtype=torch.int32),
                "lengths": torch.tensor([len(p[0]) for p in pending], dtype=torch.int32),
                "doc_ids": torch.tensor([p[1] for p in pending], dtype=torch.int64),
            },
            "counters": {"steps": self.steps, "rows_global": self.rows_global, "tokens_seen": self.tokens_seen,
                         "real_tokens": self.real_tokens},
            "check": self._fingerprint(),
        }

    def _fingerprint(self) -> dict:
        c = self.cfg
        return {"rank": self.rank, "world_size": self.world_size, "row_tokens": self.row_tokens,
                "max_seq_len": c.max_seq_len, "doc_batch_size": c.doc_batch_size, "seed": self.seed,
                "mlm_probability": c.mlm_probability, "split": self.split}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken (call before iterating)."""
        if not self.training or not state:
            return
        if self._started:
            raise RuntimeError("load_state_dict must be called before the loader is iterated")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown loader state version {state.get('version')}")
        mine, theirs = self._fingerprint(), state["check"]
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(f"loader state does not match this loader (saved, now): {diff}")
        st = state["streaming"]
        self.num_canonical_nodes = st["num_canonical_nodes"]
        self.dataset.load_state_dict(dict(st))
        self._reset_position()
        self._epoch = st["epoch"]
        self._epoch_docs = st["sample_in_epoch"] // self.world_size
        self._skip = state["skip"]
        self._epochs_done = state["epochs_done"]
        self._finished = state["finished"]
        # Even a rank that had exhausted the epoch re-opens it (it yields nothing): Streaming starts
        # an epoch with a barrier over all ranks, so every rank must open it together.
        self.packer.load_state_dict(state["packer"])
        p = state["pending"]
        tokens, pos = p["tokens"].numpy().astype(np.int64), 0
        for n, doc_id in zip(p["lengths"].tolist(), p["doc_ids"].tolist()):
            self._pending.append((tokens[pos : pos + n], doc_id))
            pos += n
        c = state["counters"]
        self.steps, self.rows_global, self.tokens_seen, self.real_tokens = c["steps"], c["rows_global"], c["tokens_seen"], c["real_tokens"]


# --------------------------------------------------------------------------- builders
def build_train_loader(cfg: DataConfig, seed: Optional[int] = None, rank: Optional[int] = None,
                       world_size: Optional[int] = None) -> PackedLoader:
    return PackedLoader(cfg, cfg.split, training=True, rank=rank, world_size=world_size, seed=seed)


def build_eval_loader(cfg: DataConfig, rank: Optional[int] = None, world_size: Optional[int] = None) -> PackedLoader:
    if not cfg.eval_split:
        raise FileNotFoundError("data.eval_split is not set")
    return PackedLoader(cfg, cfg.eval_split, training=False, rank=rank, world_size=world_size)


def has_eval(cfg: DataConfig) -> bool:
    """Whether an eval split is configured and (for local data) present."""
    if not cfg.eval_split:
        return False
    if cfg.remote:
        return True
    return os.path.isfile(os.path.join(cfg.local, cfg.eval_split, "index.json"))


def packing_efficiency(batch: dict) -> float:
    """Real tokens / token budget over the rows of a device batch."""
    rows = batch["rows"]
    return sum(r["num_tokens"] for r in rows) / max(1, sum(int(r["input_ids"].numel()) for r in rows))
