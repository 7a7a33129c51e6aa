"""Greedy best-fit sequence packing with a lookahead buffer.

Each row has a fixed token budget ``T = microbatch_size * max_seq_len`` (a static shape for the
model and compilers).  The packer keeps up to ``buffer_size`` documents; to fill a row it
repeatedly takes the *longest buffered document that still fits* in the row's remaining space
(best fit), refilling the buffer after every document it takes.  Whole documents only: a
document is never split across rows, so attention never crosses a row boundary mid-document.

With a few thousand documents of lookahead the leftover space of a row is almost always filled
exactly (>99% efficiency on the paper's variable-length sets, see scripts/bench_data.py).

Documents are bucketed by length (a deque per length, FIFO inside a bucket) with a sorted list
of the lengths present, so a best-fit lookup is one ``bisect``.  The packer is deterministic and
holds no RNG: its ``state_dict`` (the buffered documents in bucket order) restores it exactly.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from typing import Callable, Optional

import numpy as np
import torch

Doc = tuple[np.ndarray, int]  # (token ids, document id)


class BestFitPacker:
    def __init__(self, row_tokens: int, max_seq_len: int, buffer_size: int):
        if max_seq_len > row_tokens:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds the row budget {row_tokens}")
        self.row_tokens = row_tokens
        self.max_seq_len = max_seq_len
        self.buffer_size = buffer_size
        self._buckets: dict[int, deque] = {}
        self._lengths: list[int] = []  # sorted lengths that have a non-empty bucket
        self._count = 0
        self._tokens = 0

    def __len__(self) -> int:
        return self._count

    @property
    def buffered_tokens(self) -> int:
        return self._tokens

    def full(self) -> bool:
        return self._count >= self.buffer_size

    def add(self, ids: np.ndarray, doc_id: int = -1) -> None:
        n = len(ids)
        if not 0 < n <= self.max_seq_len:
            raise ValueError(f"document {doc_id} has {n} tokens; documents must have 1..{self.max_seq_len}")
        bucket = self._buckets.get(n)
        if bucket is None:
            bucket = self._buckets[n] = deque()
            insort(self._lengths, n)
        bucket.append((ids, doc_id))
        self._count += 1
        self._tokens += n

    def _take(self, space: int) -> Optional[Doc]:
        """The oldest of the longest documents with length <= space, removed from the buffer."""
        i = bisect_right(self._lengths, space) - 1
        if i < 0:
            return None
        n = self._lengths[i]
        bucket = self._buckets[n]
        doc = bucket.popleft()
        if not bucket:
            del self._buckets[n]
            self._lengths.pop(i)
        self._count -= 1
        self._tokens -= n
        return doc

    def pop_row(self, refill: Optional[Callable[[], None]] = None) -> list[Doc]:
        """Documents for one row (empty when the buffer is empty).

        ``refill`` is called after each document taken so the lookahead stays full while a large
        row (hundreds of documents) is being assembled.
        """
        docs: list[Doc] = []
        space = self.row_tokens
        while space > 0:
            doc = self._take(space)
            if doc is None:
                break
            docs.append(doc)
            space -= len(doc[0])
            if refill is not None:
                refill()
        return docs

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The buffered documents in bucket order (ascending length, FIFO inside), as tensors
        (``torch.load(weights_only=True)`` accepts them)."""
        docs = [d for n in self._lengths for d in self._buckets[n]]
        return {
            "tokens": torch.from_numpy(np.concatenate([d[0] for d in docs]).astype(np.int32)) if docs else torch.zeros(0, dtype=torch.int32),
            "lengths": torch.tensor([len(d[0]) for d in docs], dtype=torch.int32),
            "doc_ids": torch.tensor([d[1] for d in docs], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict) -> None:
        self._buckets, self._lengths, self._count, self._tokens = {}, [], 0, 0
        tokens = state["tokens"].numpy().astype(np.int64)
        pos = 0
        for n, doc_id in zip(state["lengths"].tolist(), state["doc_ids"].tolist()):
            self.add(tokens[pos : pos + n], doc_id)
            pos += n


def make_row(docs: list[Doc], row_tokens: int, max_seq_len: int, pad_id: int) -> dict:
    """Concatenate documents into a row of exactly ``row_tokens`` (docs/internals.md contract).

    Returns ``input_ids`` (int64 numpy, pad tail), ``cu_seqlens`` (int32 torch), ``max_seqlen``,
    ``num_tokens`` and ``doc_ids``.  The pad tail is cut into segments of at most
    ``max_seq_len`` so that every token belongs to a segment no longer than a document may be.
    """
    lengths = [len(d[0]) for d in docs]
    used = sum(lengths)
    if used > row_tokens:
        raise ValueError(f"documents hold {used} tokens, more than the row budget {row_tokens}")
    ids = np.full(row_tokens, pad_id, dtype=np.int64)
    if docs:
        ids[:used] = np.concatenate([d[0] for d in docs])
    tail = row_tokens - used
    segments = lengths + [max_seq_len] * (tail // max_seq_len) + ([tail % max_seq_len] if tail % max_seq_len else [])
    cu = np.zeros(len(segments) + 1, dtype=np.int32)
    np.cumsum(segments, out=cu[1:])
    return {
        "input_ids": ids,
        "cu_seqlens": torch.from_numpy(cu),
        "max_seqlen": int(max(segments)),
        "num_tokens": int(used),
        "doc_ids": [d[1] for d in docs],
    }
