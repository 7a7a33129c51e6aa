"""The masking rate as a schedule over the phase's tokens (``data.mlm_probability``).

``data.mlm_probability`` is a number (a constant rate, as before) or a mapping::

    mlm_probability: {start: 0.30, end: 0.15, shape: linear, tokens: 2_000_000_000}

``shape``: ``linear`` and ``cosine`` move from ``start`` to ``end`` over the first ``tokens``
tokens of the phase and stay at ``end`` after; ``step`` keeps ``start`` until ``tokens`` and then
``end``.  Tokens are the loader's global token slots since the phase began (the counter batch-size
warmup uses, saved with the loader's state), read at the start of each step: every row of a step
is masked at one rate, and a resumed run masks exactly as an uninterrupted one.  The rate in force
is logged every step (``data/mlm_probability``), next to the realised masked fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from flexbert.errors import FlexBertError

SHAPES = ("linear", "cosine", "step")


class MaskScheduleError(FlexBertError, ValueError):
    """A bad ``data.mlm_probability`` (one line naming the key)."""


@dataclass(frozen=True)
class MaskSchedule:
    start: float
    end: float
    shape: str = "linear"
    tokens: int = 0  # 0: constant at ``start``

    def rate(self, tokens_seen: int) -> float:
        """The masking rate after ``tokens_seen`` tokens of the phase."""
        if self.tokens <= 0 or self.start == self.end:
            return self.start
        t = min(1.0, max(0.0, tokens_seen / self.tokens))
        if self.shape == "step":
            return self.end if tokens_seen >= self.tokens else self.start
        if self.shape == "cosine":
            t = (1.0 - math.cos(math.pi * t)) / 2.0
        return self.start + (self.end - self.start) * t

    @property
    def highest(self) -> float:
        return max(self.start, self.end)


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise MaskScheduleError(f"{key}: a masking rate must be a number in (0, 1), got {value!r}")
    return float(value)


def parse_mask_schedule(value: Any, key: str = "data.mlm_probability") -> MaskSchedule:
    """A number or ``{start, end, shape, tokens}`` as a MaskSchedule; one-line errors naming the key."""
    if not isinstance(value, Mapping):
        rate = _rate(value, key)
        return MaskSchedule(rate, rate)
    unknown = sorted(set(value) - {"start", "end", "shape", "tokens"})
    if unknown:
        raise MaskScheduleError(f"{key}.{unknown[0]}: unknown key; a schedule has start, end, shape, tokens")
    for required in ("start", "end", "tokens"):
        if required not in value:
            raise MaskScheduleError(f"{key}.{required}: required in a masking schedule (start, end, shape, tokens)")
    shape = value.get("shape", "linear")
    if shape not in SHAPES:
        raise MaskScheduleError(f"{key}.shape: unknown shape '{shape}'; valid choices: {', '.join(SHAPES)}")
    tokens = value["tokens"]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise MaskScheduleError(f"{key}.tokens: the tokens the schedule spans, an integer >= 1, got {tokens!r}")
    return MaskSchedule(_rate(value["start"], f"{key}.start"), _rate(value["end"], f"{key}.end"), shape, tokens)
