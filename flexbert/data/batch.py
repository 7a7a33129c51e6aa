"""Counting a device batch ``{"rows": [row, ...]}`` (or one bare row): the one place the batch
statistics are computed, read by the loader (``last_batch_stats``), Composer's ``DataSpec`` and
the ``RunMetrics`` callback."""

from __future__ import annotations

from typing import Any

from flexbert.config import IGNORE_INDEX


def rows_of(batch: dict[str, Any]) -> list[dict]:
    return list(batch["rows"]) if "rows" in batch else [batch]


def num_masked(batch: dict[str, Any]) -> int:
    """Predicted (masked) tokens: the loss-generating tokens and Composer's sample count."""
    total = 0
    for row in rows_of(batch):
        n = row.get("num_masked")
        total += int(n) if n is not None else int((row["labels"] != IGNORE_INDEX).sum())
    return total


def num_real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens."""
    total = 0
    for row in rows_of(batch):
        n = row.get("num_tokens")
        total += int(n) if n is not None else int(row["cu_seqlens"][-1])
    return total


def packing_efficiency(batch: dict[str, Any]) -> float:
    """Real tokens / token budget over the rows of a batch."""
    budget = sum(int(r["input_ids"].numel()) for r in rows_of(batch))
    return num_real_tokens(batch) / budget if budget else 0.0


def batch_stats(batch: dict[str, Any]) -> dict[str, float]:
    """rows, num_tokens (real), num_masked and packing_efficiency of one batch."""
    return {
        "rows": len(rows_of(batch)),
        "num_tokens": num_real_tokens(batch),
        "num_masked": num_masked(batch),
        "packing_efficiency": packing_efficiency(batch),
    }
