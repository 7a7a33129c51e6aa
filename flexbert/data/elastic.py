"""Resuming on another number of ranks (elastic resume).

Streaming's sample order for an epoch depends only on the seed and ``num_canonical_nodes``, not
on the number of ranks reading it: the ranks take turns along one global order.  A checkpoint
records the global position that every rank has reached (the slowest rank's count times the
world size); a run with any number of ranks continues from there.  Two things are left over per
old rank: documents it held (packer buffer, fetched but unpacked), which the new ranks share out,
and documents it had read beyond the common position, which the new ranks must not train on
again.  Those are named by their sample ids, kept here for the newest reads of the epoch.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np


class IdHistory:
    """The newest sample ids received this epoch (up to CAPACITY), in order: a resume on another
    number of ranks needs the ids a rank read beyond the slowest rank's position."""

    CAPACITY = 1 << 20

    def __init__(self):
        self._chunks: deque = deque()
        self._n = 0
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def add(self, sample_id: int) -> None:
        if not self._chunks or len(self._chunks[-1]) >= 4096:
            self._chunks.append([])
        self._chunks[-1].append(int(sample_id))
        self._n += 1
        self._total += 1
        while self._n - len(self._chunks[0]) >= self.CAPACITY:
            self._n -= len(self._chunks.popleft())

    def last(self, k: int) -> Optional[list]:
        """The newest ``k`` ids, oldest first; None when fewer are kept."""
        if k > self._n:
            return None
        if k == 0:
            return []
        flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in self._chunks])
        return flat[len(flat) - k:].tolist()
