"""Fixed shapes for packed rows, so a compiled model traces once (docs/model.md, "Compile once").

What varies from row to row -- the number of documents and the number of masked tokens -- lives
in fixed-capacity tensors instead of tensor shapes:

* ``cu_seqlens`` is padded to ``max_docs + 1`` entries with zero-length documents at the end;
* ``max_seqlen`` is the data's ``max_seq_len`` for every row, not the row's longest document;
* with sparse prediction the masked positions are gathered into ``max_predictions`` slots (the
  spare slots carry label -100 and cost a little decoder work, nothing else).

The capacities come from the data config (``for_rows``); a row that exceeds one (documents
shorter than the estimate, an unlucky masking draw) raises it, with one warning, at the cost of
one recompilation.  Nothing here reads a device tensor: the row's sizes are host facts
(``cu_seqlens`` length, the loader's ``num_masked``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from flexbert.config import IGNORE_INDEX

log = logging.getLogger(__name__)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass
class StaticShapes:
    row_tokens: int  # tokens per row (T)
    max_seqlen: int  # longest document the data can hold
    max_docs: int  # cu_seqlens capacity
    max_predictions: Optional[int] = None  # masked-token capacity; None: the model predicts every token

    @classmethod
    def for_rows(cls, row_tokens: int, max_seq_len: int, mlm_probability: float, sparse: bool) -> "StaticShapes":
        """Capacities for rows of ``row_tokens`` tokens masked at ``mlm_probability``.

        Documents: one per 64 tokens on average, at least 64 (ModernBERT's median document is
        ~460 tokens; every padding document is an empty kernel block for varlen/flash attention,
        so the capacity is generous but not unbounded).
        Predictions: the binomial mean plus 6 standard deviations, in multiples of 64 (special
        and padding tokens are never masked, so the true mean is lower)."""
        docs = max(64, row_tokens // 64)
        preds = None
        if sparse:
            p = min(max(mlm_probability, 0.0), 1.0)
            bound = row_tokens * p + 6 * math.sqrt(row_tokens * p * (1 - p)) + 1
            preds = min(row_tokens, _round_up(int(bound), 64))
        return cls(row_tokens, max_seq_len, docs, preds)

    def _grow(self, what: str, needed: int, current: int, limit: int) -> int:
        new = min(limit, max(2 * current, _round_up(needed, 64)))
        log.warning("a row has %d %s, more than the static capacity %d: raised to %d (a compiled model recompiles once)",
                    needed, what, current, new)  # fmt: skip
        return new

    def row_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        """``FlexBertForMaskedLM`` keyword arguments for one loader row, in fixed shapes."""
        cu = row["cu_seqlens"]
        T = int(row["input_ids"].shape[0])
        if T != self.row_tokens:
            raise ValueError(f"row of {T} tokens; the static shapes were set for {self.row_tokens}-token rows")
        if int(row["max_seqlen"]) > self.max_seqlen:
            raise ValueError(f"row has a {int(row['max_seqlen'])}-token segment, longer than max_seq_len {self.max_seqlen}")
        docs = cu.shape[0] - 1
        if docs > self.max_docs:
            self.max_docs = self._grow("documents", docs, self.max_docs, T)
        out = dict(cu_seqlens=pad_cu_seqlens(cu, self.max_docs), max_seqlen=self.max_seqlen, static=True)
        if self.max_predictions is not None:
            masked = row.get("num_masked")  # the loader counts it; a hand-made row pays a host sync
            masked = int(masked) if masked is not None else int((row["labels"] != IGNORE_INDEX).sum())
            if masked > self.max_predictions:
                self.max_predictions = self._grow("masked tokens", masked, self.max_predictions, T)
            out["max_predictions"] = self.max_predictions
        return out


def pad_cu_seqlens(cu: torch.Tensor, max_docs: int) -> torch.Tensor:
    """``cu_seqlens`` with ``max_docs + 1`` entries: zero-length documents appended at the end."""
    missing = max_docs + 1 - cu.shape[0]
    if missing < 0:
        raise ValueError(f"cu_seqlens holds {cu.shape[0] - 1} documents, more than the capacity {max_docs}")
    cu = cu.to(torch.int32)
    return torch.cat([cu, cu[-1:].expand(missing)]) if missing else cu


def gather_predicted(h: torch.Tensor, labels: torch.Tensor, capacity: Optional[int], ignore_index: int):
    """Rows of ``h`` and ``labels`` at labelled positions.

    ``capacity`` None: exactly the labelled positions (a data-dependent shape: eager use).
    Otherwise ``capacity`` rows, labelled positions first in order, then unlabelled ones (label
    ``ignore_index``) -- a static shape; the caller guarantees capacity >= labelled count."""
    if capacity is None:
        keep = labels != ignore_index
        return h[keep], labels[keep]
    capacity = min(capacity, labels.shape[0])
    order = torch.argsort((labels == ignore_index).to(torch.int32), stable=True)[:capacity]
    return h[order], labels[order]
