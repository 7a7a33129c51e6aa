"""Rows from documents: :class:`PackedLoader` packs this rank's documents
(:class:`flexbert.data.documents.RankDocuments`) into masked device batches
``{"rows": [row, ...]}`` (docs/internals.md).

Packing and masking run in the main process: packing is cheap (far above any model's token rate,
scripts/bench_data.py) and keeping it here makes its state easy to save.  ``state_dict()`` holds
the documents' position and pending documents, the packer's buffered documents, and the counters
the masks and the batch-size schedule derive from.  Masks are a pure function of (seed, global
row index), so no RNG state is needed.  With ``world_size > 1`` ranks agree once per step, over a
small all-reduce, that all of them have exhausted the epoch before any starts the next; a rank
with nothing left meanwhile packs from its buffer and, at worst, yields a padding-only row
(``num_masked == 0``).  ``state_dict()`` is collective when ``world_size > 1``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Optional

import numpy as np
import torch

from flexbert.data.batch import batch_stats
from flexbert.data.config import DataConfig
from flexbert.data.documents import RankDocuments, resolve_world
from flexbert.config import IGNORE_INDEX
from flexbert.data.masking import OBJECTIVES, MLMMasker, clm_labels
from flexbert.data.packing import BestFitPacker, make_row
from flexbert.data.ragged import docs_from_state, empty_state
from flexbert.data.source import DataSource, resolve_source
from flexbert.data.streams import StreamIndex, build_dataset
from flexbert.data.tokenizer import SpecialTokens
from flexbert.data.warmup import BatchSizeWarmup, warmup_from_config

STATE_VERSION = 1


# --------------------------------------------------------------------------- the loader
class PackedLoader:
    """Iterable of device batches.  ``training=True``: batch-size warmup, train masking, state;
    ``training=False``: one finite pass per ``iter()``, fixed eval masks, restarts each time.
    ``objective="clm"``: no masking; the labels are each document's next tokens (``clm_labels``)."""

    def __init__(self, cfg: DataConfig, split: str, *, training: bool, rank: Optional[int] = None,
                 world_size: Optional[int] = None, seed: Optional[int] = None, special: Optional[SpecialTokens] = None,
                 objective: str = "mlm", phase: Optional[tuple[float, str]] = None):
        cfg.validate()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.cfg, self.split, self.training, self.objective = cfg, split, training, objective
        self.rank, self.world_size = resolve_world(rank, world_size)
        self.seed = cfg.seed if seed is None else seed
        self.special = special or resolve_source(cfg).special
        self.row_tokens = cfg.row_tokens
        self.max_seq_len = cfg.max_seq_len
        if training:
            self.warmup: Optional[BatchSizeWarmup] = warmup_from_config(cfg, self.world_size)
            self.schedule = cfg.mask_schedule.for_phase(phase)  # a span of the phase: in its max_duration's unit
            self.masker = MLMMasker(self.special, self.schedule.start, self.seed, cfg.mask_token_fraction,
                                    cfg.random_token_fraction)
        else:
            self.warmup = None
            self.schedule = None
            self.masker = MLMMasker(self.special, cfg.eval_mlm_probability, cfg.eval_seed, cfg.mask_token_fraction,
                                    cfg.random_token_fraction)
        self.packer = BestFitPacker(self.row_tokens, self.max_seq_len, cfg.packer_buffer_size)
        dataset = build_dataset(cfg, split, shuffle=cfg.shuffle and training, seed=self.seed,
                                rank=self.rank, world_size=self.world_size, weighted=training)
        # tokens per source of a mixture (data.streams), counted on this rank
        self.sources = StreamIndex.of(dataset, list(cfg.streams)) if cfg.streams else None
        self.docs = RankDocuments(
            dataset, doc_batch_size=cfg.doc_batch_size, num_workers=cfg.num_workers, max_seq_len=cfg.max_seq_len,
            special=self.special, epochs=cfg.epochs if training else 1, rank=self.rank,
            world_size=self.world_size, split=split, sync_epochs=training)
        self._reset_position()
        self.last_batch_stats: dict = {}

    @property
    def docs_fetched(self) -> int:
        return self.docs.docs_fetched

    def _reset_position(self) -> None:
        self.docs.reset()
        self.steps = 0
        self.rows_global = 0  # rows emitted by all ranks (mask seeds derive from it)
        self.tokens_seen = 0  # global sequence-slot tokens (batch-size warmup counter)
        self.real_tokens = 0  # non-pad tokens emitted by this rank
        self.source_tokens = np.zeros(len(self.cfg.streams), np.int64)  # per data.streams source, this rank
        self._started = False
        self.packer.load_state_dict(empty_state())

    def _fill(self) -> None:
        while not self.packer.full():
            doc = self.docs.take()
            if doc is None:
                return
            self.packer.add(*doc)

    def _row(self, docs: list, global_index: int, rate: Optional[float] = None) -> dict:
        r = make_row(docs, self.row_tokens, self.max_seq_len, self.special.pad_id)
        if self.objective == "clm":
            ids, labels = r["input_ids"], clm_labels(r["input_ids"], r["cu_seqlens"], r["num_tokens"])
            n_masked = int((labels != IGNORE_INDEX).sum())
        else:
            ids, labels, n_masked = self.masker(r["input_ids"], global_index, rate)
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
        if self.sources is not None and docs:
            self.source_tokens += self.sources.tokens_per_stream(r["doc_ids"], [len(d[0]) for d in docs])
        return row

    def tokens_per_source(self) -> dict[str, int]:
        """Real tokens this rank has emitted from each data.streams source (empty without streams)."""
        return {n: int(t) for n, t in zip(self.cfg.streams, self.source_tokens)}

    def rows_per_step(self) -> int:
        """Rows (= microbatches) this rank yields at the next step."""
        if self.warmup is None:
            return self.cfg.eval_rows_per_batch
        return self.warmup.rows_per_rank_at(self.tokens_seen, self.cfg.microbatch_size, self.world_size)

    def _any_data(self) -> bool:
        """Fill the packer; with several ranks, whether any rank still has data (collective), after
        starting the next epoch together when every rank has exhausted the current one."""
        docs = self.docs
        docs.open_epoch()
        self._fill()
        if self.world_size == 1:
            return len(self.packer) > 0
        # one tiny all-reduce per step: (does any rank still read this epoch, does any have data)
        waiting = int(docs.exhausted)
        any_reading, any_data = docs.sync.max([1 - waiting, int(len(self.packer) > 0)])
        if waiting and not any_reading and self.training:
            docs.next_epoch()  # every rank exhausted the epoch: all start the next together
            docs.open_epoch()
            self._fill()
            any_data = docs.sync.max([int(len(self.packer) > 0)])[0]
        return bool(any_data) or not (docs.finished or not self.training)

    def _next_batch(self) -> Optional[dict]:
        n_rows = self.rows_per_step()
        if not self._any_data():
            return None
        rows = []
        first = self.rows_global + self.rank * n_rows
        rate = self.schedule.rate(self.tokens_seen, self.steps) if self.schedule is not None else self.masker.p
        rate = 0.0 if self.objective == "clm" else rate  # nothing is masked (logged as data/mlm_probability)
        for j in range(n_rows):
            docs = self.packer.pop_row(refill=self._fill)
            if not docs and rows:
                break  # the data ran out mid-step (last step of a finite pass)
            rows.append(self._row(docs, first + j, rate))  # docs == []: a padding-only row
        batch = {"rows": rows, "mlm_probability": rate}
        self.steps += 1
        self.rows_global += n_rows * self.world_size
        self.tokens_seen += n_rows * self.world_size * self.row_tokens
        stats = batch_stats(batch)
        self.real_tokens += stats["num_tokens"]
        self.last_batch_stats = {
            **stats,
            "global_batch_sequences": n_rows * self.world_size * self.cfg.microbatch_size,
            "tokens_seen": self.tokens_seen,
            "epoch": self.docs.epoch,
        }
        return batch

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
        return {
            "version": STATE_VERSION,
            **self.docs.state_dict(self.seed),
            "packer": self.packer.state_dict(),
            "counters": {"steps": self.steps, "rows_global": self.rows_global, "tokens_seen": self.tokens_seen,
                         "real_tokens": self.real_tokens, "source_tokens": self.source_tokens.tolist()},
            "check": self._fingerprint(),
        }

    def _fingerprint(self) -> dict:
        c = self.cfg
        return {"rank": self.rank, "world_size": self.world_size, "row_tokens": self.row_tokens,
                "max_seq_len": c.max_seq_len, "doc_batch_size": c.doc_batch_size, "seed": self.seed,
                "mlm_probability": c.mlm_probability, "split": self.split}

    def _check(self, state: dict, ignore: tuple = ()) -> None:
        if self._started:
            raise RuntimeError("load_state_dict must be called before the loader is iterated")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown loader state version {state.get('version')}")
        mine, theirs = self._fingerprint(), state["check"]
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v and k not in ignore}
        if diff:
            raise ValueError(f"loader state does not match this loader (saved, now): {diff}")

    def _load_counters(self, c: dict, share: float = 1.0) -> None:
        self.steps, self.rows_global, self.tokens_seen = c["steps"], c["rows_global"], c["tokens_seen"]
        self.real_tokens = int(c["real_tokens"] * share)
        if c.get("source_tokens") and len(c["source_tokens"]) == len(self.source_tokens):
            self.source_tokens = (np.asarray(c["source_tokens"], np.int64) * share).astype(np.int64)

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken (call before iterating)."""
        if not self.training or not state:
            return
        self._check(state)
        self._reset_position()
        self.docs.load_state_dict(state)
        self.packer.load_state_dict(state["packer"])
        self._load_counters(state["counters"])

    def load_elastic_state(self, states: list[dict]) -> None:
        """Continue from the per-rank states of a run with another number of ranks (call on every
        rank before iterating).  The global sample order goes on where the slowest old rank stood;
        the documents the old ranks held (packer buffers and fetched ones) are shared out between
        the new ranks, and those the old ranks had read beyond the common position are not read
        again.  Not bitwise equal to an uninterrupted run (rows are packed differently), but every
        document of the epoch is trained on exactly once."""
        if not self.training or not states:
            return
        for st in states:
            self._check(st, ignore=("rank", "world_size"))
        self._reset_position()
        held = [d for st in states for d in docs_from_state(st["packer"])] + self.docs.load_elastic_state(states)
        self.docs.pending.extend(held[self.rank :: self.world_size])
        # per-rank token counters: each new rank takes an equal share of the old ranks' sum
        total = {k: states[0]["counters"][k] for k in ("steps", "rows_global", "tokens_seen")}
        total["real_tokens"] = sum(st["counters"]["real_tokens"] for st in states)
        sources = [st["counters"].get("source_tokens") for st in states]
        if all(sources):
            total["source_tokens"] = np.sum(np.asarray(sources, np.int64), axis=0).tolist()
        self._load_counters(total, share=1.0 / self.world_size)


# --------------------------------------------------------------------------- builders
def build_train_loader(cfg: DataConfig, seed: Optional[int] = None, rank: Optional[int] = None,
                       world_size: Optional[int] = None, source: Optional[DataSource] = None,
                       objective: str = "mlm", phase: Optional[tuple[float, str]] = None) -> PackedLoader:
    """The training loader; ``source``: the data section resolved (flexbert/data/source.py), else
    resolved here; ``objective``: the run's (``mlm`` masks, ``clm`` labels next tokens); ``phase``:
    the run's max_duration as (number, unit), what a masking schedule over the phase spans
    (flexbert/data/mask_schedule.py)."""
    source = source or resolve_source(cfg)
    return PackedLoader(cfg, cfg.split, training=True, rank=rank, world_size=world_size, seed=seed, special=source.special,
                        objective=objective, phase=phase)


def build_eval_loader(cfg: DataConfig, rank: Optional[int] = None, world_size: Optional[int] = None,
                      source: Optional[DataSource] = None, objective: str = "mlm") -> PackedLoader:
    if not cfg.eval_split:
        raise FileNotFoundError("data.eval_split is not set")
    source = source or resolve_source(cfg)
    return PackedLoader(cfg, cfg.eval_split, training=False, rank=rank, world_size=world_size, special=source.special,
                        objective=objective)


def has_eval(cfg: DataConfig) -> bool:
    """Whether an eval split is configured and (for local data) present in every source."""
    if not cfg.eval_split:
        return False
    return all(remote or os.path.isfile(os.path.join(local, cfg.eval_split, "index.json"))
               for local, remote in cfg.sources())


def per_source_eval_configs(cfg: DataConfig, source: DataSource) -> dict[str, DataConfig]:
    """One single-source data config per data.streams source with ``eval: true`` whose eval split
    exists: the per-source evaluations (metrics/eval_<name>/...), read with the mixture's tokenizer."""
    out = {}
    for name, s in cfg.streams.items():
        one = dataclasses.replace(cfg, streams={}, streams_temperature=None, local=s.local, remote=s.remote,
                                  epoch_size=None, tokenizer=source.tokenizer_dir)
        if s.eval and has_eval(one):
            out[name] = one
    return out
