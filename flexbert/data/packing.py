"""Greedy best-fit sequence packing with a lookahead buffer.

Each row has a fixed token budget ``T = microbatch_size * max_seq_len`` (a static shape for the
model and compilers).  The packer keeps up to ``buffer_size`` documents.  A row starts with the
*oldest* buffered document, then repeatedly takes the *longest buffered document that still
fits* in the remaining space (best fit), refilling the buffer after every document it takes.
Whole documents only: a document is never split across rows.

Why oldest-first and not longest-first: with a large buffer, longest-first opens every row with
the buffer's most extreme document, whose complement is just as rare, and wastes ~1% per row; the
oldest document has a typical length, so the best fit almost always closes the row exactly
(99.9% in steady state, >99% including the drain at the end of an epoch, scripts/bench_data.py).
It also bounds how long any document waits.

Documents are bucketed by length (a deque per length, FIFO inside a bucket) with a sorted list of
the lengths present, so a best-fit lookup is one ``bisect``; the globally oldest document is always
the head of its bucket.  The packer is deterministic and holds no RNG: its ``state_dict`` (the
buffered documents in arrival order) restores it exactly.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from typing import Callable, Optional

import numpy as np
import torch

from flexbert.data.ragged import Doc, docs_from_state, docs_to_state


class BestFitPacker:
    def __init__(self, row_tokens: int, max_seq_len: int, buffer_size: int):
        if max_seq_len > row_tokens:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds the row budget {row_tokens}")
        self.row_tokens = row_tokens
        self.max_seq_len = max_seq_len
        self.buffer_size = buffer_size
        self._buckets: dict[int, deque] = {}  # length -> deque of (seq, ids, doc_id), oldest first
        self._lengths: list[int] = []  # sorted lengths that have a non-empty bucket
        self._arrivals: deque = deque()  # (seq, length) in arrival order; entries of taken docs linger
        self._seq = 0
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
        bucket.append((self._seq, ids, doc_id))
        self._arrivals.append((self._seq, n))
        self._seq += 1
        self._count += 1
        self._tokens += n

    def _pop_bucket(self, n: int, i: Optional[int] = None) -> Doc:
        bucket = self._buckets[n]
        _, ids, doc_id = bucket.popleft()
        if not bucket:
            del self._buckets[n]
            self._lengths.pop(bisect_right(self._lengths, n) - 1 if i is None else i)
        self._count -= 1
        self._tokens -= n
        return ids, doc_id

    def _take_oldest(self) -> Optional[Doc]:
        while self._arrivals:
            seq, n = self._arrivals.popleft()
            bucket = self._buckets.get(n)
            if bucket and bucket[0][0] == seq:  # still buffered (a bucket's head is its oldest)
                return self._pop_bucket(n)
        return None

    def _take_best_fit(self, space: int) -> Optional[Doc]:
        """The oldest of the longest documents with length <= space."""
        i = bisect_right(self._lengths, space) - 1
        return None if i < 0 else self._pop_bucket(self._lengths[i], i)

    def pop_row(self, refill: Optional[Callable[[], None]] = None) -> list[Doc]:
        """Documents for one row (empty when the buffer is empty).

        ``refill`` is called after each document taken so the lookahead stays full while a large
        row (hundreds of documents) is being assembled.
        """
        docs: list[Doc] = []
        space = self.row_tokens
        doc = self._take_oldest()
        while doc is not None:
            docs.append(doc)
            space -= len(doc[0])
            if refill is not None:
                refill()
            doc = self._take_best_fit(space) if space > 0 else None
        return docs

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The buffered documents in arrival order (flexbert/data/ragged.py); re-adding them in
        that order rebuilds the same buckets and arrival order."""
        docs = sorted((d for b in self._buckets.values() for d in b), key=lambda d: d[0])
        return docs_to_state([(d[1], d[2]) for d in docs])

    def load_state_dict(self, state: dict) -> None:
        self._buckets, self._lengths, self._arrivals = {}, [], deque()
        self._seq = self._count = self._tokens = 0
        for ids, doc_id in docs_from_state(state):
            self.add(ids, doc_id)


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
