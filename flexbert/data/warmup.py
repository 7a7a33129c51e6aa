"""Batch-size warmup counted in tokens (ModernBERT: 768 -> 4608 sequences over 50B tokens).

The batch grows from ``minimum`` to ``full`` sequences in levels one *granule* apart, where a
granule is one row on every rank (``microbatch_size * world_size`` sequences), so every level is
a whole number of rows per rank.  Every level below ``full`` lasts the same number of optimizer
steps ``s``, chosen so that the warmup consumes (as nearly as whole steps allow) the requested
number of tokens::

    levels  b_1 < b_2 < ... < b_k < full       (b_1 = minimum rounded up to a granule)
    s       = round(warmup_tokens / (seq_len * sum(b_i)))   (at least 1)
    level i ends once s * seq_len * (b_1 + ... + b_i) tokens have been seen

Tokens are counted as *sequence slots* (``sequences * max_seq_len``) summed over all ranks, so
every rank computes the same batch size from its own counter, without communication, and a
resumed loader continues the schedule exactly.  ``sequences_at(tokens)`` is a pure function the
trainer can call as well.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchSizeWarmup:
    full: int  # sequences per step after warmup (global)
    seq_len: int  # tokens per sequence
    granule: int  # sequences per level step: microbatch_size * world_size
    minimum: int = 0  # sequences per step at the start; 0 disables warmup
    warmup_tokens: int = 0
    _bounds: tuple = field(init=False, repr=False, compare=False)
    _levels: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.granule < 1 or self.full < self.granule or self.full % self.granule:
            raise ValueError(f"global batch {self.full} sequences is not a positive multiple of {self.granule} "
                             "(microbatch_size * world_size)")
        levels: list[int] = []
        if self.minimum and self.warmup_tokens > 0:
            first = -(-self.minimum // self.granule) * self.granule  # round up to a whole row per rank
            levels = list(range(first, self.full, self.granule))
        bounds: list[int] = []
        if levels:
            steps = max(1, round(self.warmup_tokens / (self.seq_len * sum(levels))))
            acc = 0
            for b in levels:
                acc += steps * self.seq_len * b
                bounds.append(acc)
        object.__setattr__(self, "_levels", tuple(levels))
        object.__setattr__(self, "_bounds", tuple(bounds))

    @property
    def levels(self) -> tuple[int, ...]:
        """The warmup batch sizes (sequences), excluding ``full``."""
        return self._levels

    @property
    def steps_per_level(self) -> int:
        if not self._levels:
            return 0
        return self._bounds[0] // (self.seq_len * self._levels[0])

    @property
    def end_tokens(self) -> int:
        """Tokens after which the full batch is used (the warmup rounded to whole steps)."""
        return self._bounds[-1] if self._bounds else 0

    def sequences_at(self, tokens_seen: int) -> int:
        """Global batch size (sequences) for the step that starts after ``tokens_seen`` tokens."""
        i = bisect_right(self._bounds, tokens_seen)
        return self._levels[i] if i < len(self._levels) else self.full

    def rows_per_rank_at(self, tokens_seen: int, microbatch_size: int, world_size: int) -> int:
        return self.sequences_at(tokens_seen) // (microbatch_size * world_size)


def warmup_from_config(cfg, world_size: int) -> BatchSizeWarmup:
    """The schedule a ``DataConfig`` asks for on ``world_size`` ranks."""
    granule = cfg.microbatch_size * world_size
    full = cfg.global_batch_size or granule
    return BatchSizeWarmup(
        full=full,
        seq_len=cfg.max_seq_len,
        granule=granule,
        minimum=cfg.batch_size_warmup_min,
        warmup_tokens=cfg.batch_size_warmup_tokens,
    )
