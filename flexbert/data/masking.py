"""The labels of a packed row: MLM masking, or CLM next-token targets (``clm_labels``).

MLM: BERT's 80/10/10 at a configurable rate (ModernBERT: 30%), or a rate that follows a schedule
(flexbert/data/mask_schedule.py), and a configurable [MASK]/random split.

* Every non-special token is selected independently with probability ``p``; special tokens
  ([CLS], [SEP], [PAD], [MASK], [UNK], [unusedN], ...) and the padding tail never are (the
  reference code masked [CLS]/[SEP]: facts §3).
* A selected token becomes [MASK] with probability 0.8, a random token with 0.1, and stays
  unchanged with 0.1; its label is the original id, every other label is -100.
* Random replacements are drawn uniformly from the whole non-special vocabulary, not from ids up
  to the batch's largest id (the reference's bug, facts §4), and never produce a special token.
* The randomness of a row is a pure function of ``(seed, row_index)`` (a Philox counter-based
  generator keyed by both), so a resumed run masks exactly like the uninterrupted one without
  saving any RNG state, and evaluation with a fixed seed masks identically every time.
"""

from __future__ import annotations

import numpy as np

from flexbert.config import IGNORE_INDEX
from flexbert.data.tokenizer import SpecialTokens

# What a row's labels predict: ``mlm`` masked tokens (MLMMasker), ``clm`` the next token of the same
# document (``clm_labels``, the model run with causal attention).  The run config's ``objective``.
OBJECTIVES = ("mlm", "clm")


def clm_labels(input_ids: np.ndarray, cu_seqlens, num_tokens: int | None = None) -> np.ndarray:
    """CLM targets of a packed row (the ids stay as they are): ``labels[t] = input_ids[t + 1]``
    when ``t + 1`` is a real token of ``t``'s segment, else IGNORE_INDEX.  So the last token of
    every segment (``cu_seqlens``) predicts nothing -- no target crosses a document boundary --
    and neither does anything from ``num_tokens - 1`` on (the padding tail; None: no tail)."""
    ids = np.asarray(input_ids)
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    labels[:-1] = ids[1:]
    ends = np.asarray(cu_seqlens, dtype=np.int64)[1:] - 1  # last token of each segment
    labels[ends[ends >= 0]] = IGNORE_INDEX
    real = len(ids) if num_tokens is None else num_tokens
    labels[max(real - 1, 0):] = IGNORE_INDEX
    return labels


class MLMMasker:
    def __init__(self, special: SpecialTokens, probability: float = 0.30, seed: int = 0,
                 mask_frac: float = 0.8, random_frac: float = 0.1):
        if not 0.0 < probability < 1.0:
            raise ValueError(f"mlm probability must be in (0, 1), got {probability}")
        if mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1:
            raise ValueError("mask_frac and random_frac must be >= 0 and sum to <= 1")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        self.p = probability
        self.seed = seed
        self.mask_frac = mask_frac
        self.random_frac = random_frac
        self.mask_id = special.mask_id
        self.never = special.special_mask()  # lookup table: True = never select
        self.pool = special.replacement_ids()
        if len(self.pool) == 0:
            raise ValueError("the vocabulary has no non-special token to draw replacements from")

    def rng(self, row_index: int) -> np.random.Generator:
        # Philox takes a 128-bit key: seed in the high word, row index in the low word.
        return np.random.Generator(np.random.Philox(key=(self.seed << 64) | (row_index & (2**64 - 1))))

    def __call__(self, input_ids: np.ndarray, row_index: int, probability: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """(masked ids, labels, number masked) for one row; ``input_ids`` is not modified;
        ``probability``: this row's rate (a masking schedule), else the masker's."""
        p = self.p if probability is None else probability
        rng = self.rng(row_index)
        ids = input_ids
        if ids.max(initial=0) >= len(self.never):
            raise ValueError(f"token id {int(ids.max())} is outside the tokenizer's vocabulary ({len(self.never)})")
        eligible = ~self.never[ids]
        selected = (rng.random(len(ids), dtype=np.float32) < p) & eligible
        pos = np.flatnonzero(selected)
        labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
        labels[pos] = ids[pos]
        out = ids.copy()
        action = rng.random(len(pos), dtype=np.float32)
        to_mask = pos[action < self.mask_frac]
        to_rand = pos[(action >= self.mask_frac) & (action < self.mask_frac + self.random_frac)]
        out[to_mask] = self.mask_id
        out[to_rand] = self.pool[rng.integers(0, len(self.pool), size=len(to_rand))]
        return out, labels, len(pos)
