"""Data mixtures: ``data.streams``, named sources of MDS shards mixed with Streaming's ``Stream`` weights.

```yaml
data:
  streams:
    web:  {remote: s3://bucket/web, local: /cache/web, proportion: 0.6}
    code: {local: /data/code, proportion: 0.3}
    sci:  {local: /data/sci, proportion: 0.1}
```

Weights follow Streaming exactly.  Relative: every stream has a ``proportion`` and an epoch draws
``epoch_size`` documents (default: the streams' total), ``proportion / sum(proportions)`` of them
from each stream, repeating a small stream or sub-sampling a large one.  Absolute: each stream has
``repeat`` (each document that many times per epoch; fractions draw the remainder), ``choose`` (that
many documents per epoch) or nothing (each document once).  Relative and absolute weights do not mix.

Every document keeps a global Streaming sample id; ``StreamIndex`` maps ids back to stream names,
which is how tokens per source are counted and how audits attribute documents.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
from streaming import Stream, StreamingDataset

from flexbert.data.documents import _streaming_world, local_nodes
from flexbert.data.stream_config import StreamConfig, temperature_proportions
from flexbert.errors import FlexBertError

if TYPE_CHECKING:
    from flexbert.data.config import DataConfig

def build_streams(streams: Mapping[str, StreamConfig], split: str, download_timeout: float,
                  weighted: bool = True, temperature: Optional[float] = None) -> list:
    """Streaming ``Stream`` objects in config order.  ``weighted=False`` (evaluation): each
    document once, whatever the training weights; ``temperature``: proportions by size**tau."""
    shares = temperature_proportions(streams, temperature, split) if weighted and temperature is not None else {}
    out = []
    for name, s in streams.items():
        w = {}
        if weighted:
            w = {k: getattr(s, k) for k in ("proportion", "repeat", "choose") if getattr(s, k) is not None}
        if name in shares:
            w = {"proportion": shares[name]}
        out.append(Stream(local=s.local or None, remote=s.remote, split=split, download_timeout=download_timeout, **w))
    return out


class StreamIndex:
    """Global Streaming sample id -> stream position/name (streams are laid end to end)."""

    def __init__(self, names: list[str], sample_offsets: np.ndarray):
        self.names = list(names)
        self.offsets = np.asarray(sample_offsets, dtype=np.int64)

    @classmethod
    def of(cls, dataset, names: list[str]) -> "StreamIndex":
        return cls(names, dataset.sample_offset_per_stream)

    def stream_ids(self, sample_ids) -> np.ndarray:
        return np.searchsorted(self.offsets, np.asarray(sample_ids, dtype=np.int64), side="right") - 1

    def tokens_per_stream(self, sample_ids, lengths) -> np.ndarray:
        """Sum of ``lengths`` per stream for documents ``sample_ids`` (int64 vector, one per stream)."""
        return np.bincount(self.stream_ids(sample_ids), weights=np.asarray(lengths, dtype=np.float64),
                           minlength=len(self.names)).astype(np.int64)


class DocDataset(StreamingDataset):
    """Yields ``(sample_id, input_ids)``: the global sample id identifies the document.

    With a ``cache_limit`` it also stops Streaming's download-ahead thread from fetching shards
    already read.  Streaming walks each epoch with two threads: one downloads ahead, one waits for
    (and, when an eviction took it, re-downloads) the shard of the next sample.  When the second
    overtakes the first, the first keeps walking the samples already read and downloads their
    shards again, evicting the ones about to be read: each shard came 3 to 4 times per epoch in
    ``tests/test_s3_training.py``.  Such downloads are skipped here (the waiting thread fetches
    whatever is still needed), so each shard comes about once per epoch."""

    _downloader = threading.local()

    def get_item(self, sample_id: int, retry: int = 7) -> Any:
        return int(sample_id), super().get_item(sample_id, retry)["input_ids"]

    def _prepare_thread(self, it) -> None:
        self._downloader.it = it  # this thread's epoch iterator marks it as the download-ahead thread
        try:
            super()._prepare_thread(it)
        finally:
            self._downloader.it = None

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        it = getattr(self._downloader, "it", None)
        if it is not None and self.cache_limit and it.prepare_index < it.ready_index:
            return  # behind the waiting thread: this sample's shard is read, or being fetched
        super().prepare_shard(shard_id, blocking)


def build_dataset(cfg: "DataConfig", split: str, *, shuffle: bool, seed: int, rank: int,
                  world_size: int, weighted: bool = True) -> DocDataset:
    """The Streaming dataset of one split, built as rank ``rank`` of ``world_size``: data.local /
    data.remote, or the mixture of data.streams (``weighted=False``: each document once, for eval)."""
    for local, remote in cfg.sources():
        if not remote and not os.path.isfile(os.path.join(local, split, "index.json")):
            raise FileNotFoundError(f"no MDS index at {os.path.join(local, split, 'index.json')} "
                                    "(write shards with flexbert tokenize)")
    if cfg.streams:
        source: dict = dict(streams=build_streams(cfg.streams, split, cfg.download_timeout, weighted, cfg.streams_temperature),
                            epoch_size=cfg.epoch_size if weighted else None)
    else:  # local None: Streaming picks a cache dir
        source = dict(local=cfg.local or None, remote=cfg.remote, split=split)
    kwargs = dict(
        **source,
        batch_size=cfg.doc_batch_size,  # must equal the DataLoader's: Streaming partitions by it
        shuffle=shuffle, shuffle_seed=seed, shuffle_algo=cfg.shuffle_algo,
        shuffle_block_size=cfg.shuffle_block_size,
        num_canonical_nodes=cfg.num_canonical_nodes or local_nodes(world_size),
        predownload=cfg.predownload, cache_limit=cfg.cache_limit, download_timeout=cfg.download_timeout,
    )
    dataset = _construct(kwargs, rank, world_size)
    if cfg.predownload is None:
        readers = (world_size // local_nodes(world_size)) * max(1, cfg.num_workers)
        dataset.predownload = fit_predownload(dataset, readers)
    return dataset


_jitter = random.Random()


class SharedMemoryTaken(FlexBertError, FileExistsError):
    """Another process on this machine took the shared-memory prefix Streaming picked (one line)."""


def _construct(kwargs: dict, rank: int, world_size: int, attempts: int = 6) -> DocDataset:
    """``DocDataset(**kwargs)``, retried when another process on this machine took the shared-memory
    prefix Streaming had just picked (two runs starting together, e.g. a parallel sweep: Streaming
    looks for a free prefix, then creates it, and the loser of that race gets FileExistsError).
    Only a lone process retries: with several ranks the leader and the others pick the prefix in
    lock step, and a retry on one rank would pair with the wrong barrier on the others."""
    attempt = 0
    while True:
        try:
            with _streaming_world(rank, world_size):
                return DocDataset(**kwargs)
        except FileExistsError as e:
            attempt += 1
            if "_locals" not in str(e):
                raise
            if world_size > 1 or attempt == attempts:
                raise SharedMemoryTaken(f"Streaming's shared memory {e.filename or ''} was taken by another launcher on "
                                        "this machine (two launchers on one node): start a second run a few seconds "
                                        "after the first and rerun this one (it resumes); the nodes of one run need a "
                                        "/dev/shm each") from None
            time.sleep(_jitter.uniform(0.05, 0.5) * attempt)  # a private RNG: seeded runs unaffected


def fit_predownload(dataset: StreamingDataset, readers_per_node: int) -> int:
    """Samples each reader downloads ahead, so that the shards they span fit the cache.

    Streaming's default (8 doc batches ahead) ignores ``cache_limit``: when the window spans more
    shards than the cache holds, the download thread evicts shards the reader has not reached yet and
    every shard comes several times.  With a limit, the ``readers_per_node`` readers sharing the cache
    each get the shards left after two per reader (the one being read and the one being fetched),
    counted in the smallest shard's samples; never fewer than one doc batch, Streaming's floor."""
    default = 8 * dataset.batch_size
    if not dataset.cache_limit:
        return default
    fits = int(dataset.cache_limit) // int(dataset.max_shard_size_across_all_streams)
    spare = fits // max(1, readers_per_node) - 2
    fewest = min(int(shard.samples) for shard in dataset.shards)
    return max(dataset.batch_size, min(default, spare * fewest))
