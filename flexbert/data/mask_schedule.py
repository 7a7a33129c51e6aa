"""The masking rate as a schedule over the phase (``data.mlm_probability``).

``data.mlm_probability`` is a number (a constant rate, as before) or a mapping::

    mlm_probability: {start: 0.30, end: 0.15, shape: linear}                  # over the whole phase
    mlm_probability: {start: 0.30, end: 0.15, shape: linear, tokens: 2B}      # over its first 2B tokens

``shape``: ``linear`` and ``cosine`` move from ``start`` to ``end`` over the span and stay at
``end`` after; ``step`` keeps ``start`` until the span ends and then ``end``.  The span
(``tokens``) takes the duration forms the trainer reads (flexbert/config.py ``parse_time``): a
token count (``2000000000``, ``2B``, ``2Btok``), batches (``1000ba``) or a fraction of the phase
(``0.5dur``); left out, it is the whole phase (``1dur``).  A fraction is resolved against
``max_duration`` (in ``tok`` or ``ba``) where the run is built (``for_phase``).

Tokens are the loader's global token slots since the phase began (the counter batch-size warmup
uses, padding included, saved with the loader's state), batches its steps, both read at the start
of each step: every row of a step is masked at one rate, and a resumed run masks exactly as an
uninterrupted one.  Because slots count padding, a span of the phase's ``tok`` max_duration ends
a little (the padding share) before the phase does.  The rate in force is logged every step
(``data/mlm_probability``), next to the realised masked fraction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from flexbert.config import ConfigError, parse_count, parse_time
from flexbert.errors import FlexBertError

SHAPES = ("linear", "cosine", "step")


class MaskScheduleError(FlexBertError, ValueError):
    """A bad ``data.mlm_probability`` (one line naming the key)."""


@dataclass(frozen=True)
class MaskSchedule:
    start: float
    end: float
    shape: str = "linear"
    span: float = 0  # 0: constant at ``start``
    unit: str = "tok"  # what ``span`` counts: tok | ba | dur (a fraction of the phase, see for_phase)

    def rate(self, tokens_seen: int, steps: int = 0) -> float:
        """The masking rate after ``tokens_seen`` tokens (``steps`` steps) of the phase."""
        if self.span <= 0 or self.start == self.end:
            return self.start
        if self.unit == "dur":
            raise MaskScheduleError("data.mlm_probability: a schedule over a fraction of the phase needs the "
                                    "phase's max_duration (MaskSchedule.for_phase)")
        seen = tokens_seen if self.unit == "tok" else steps
        t = min(1.0, max(0.0, seen / self.span))
        if self.shape == "step":
            return self.end if seen >= self.span else self.start
        if self.shape == "cosine":
            t = (1.0 - math.cos(math.pi * t)) / 2.0
        return self.start + (self.end - self.start) * t

    def for_phase(self, max_duration: Optional[tuple[float, str]], key: str = "data.mlm_probability") -> "MaskSchedule":
        """This schedule with a fraction of the phase resolved against ``max_duration`` ((number, unit),
        flexbert/config.py ``parse_time``); unchanged when its span is tokens or batches."""
        if self.unit != "dur" or self.span <= 0 or self.start == self.end:
            return self
        if max_duration is None or max_duration[1] not in ("tok", "ba"):
            got = f"max_duration in '{max_duration[1]}'" if max_duration else "no max_duration"
            raise MaskScheduleError(f"{key}.tokens: a schedule over the phase needs max_duration in tok or ba "
                                    f"({got}); give tokens as a count or in ba, e.g. tokens: 2B")
        return dataclasses.replace(self, span=self.span * max_duration[0], unit=max_duration[1])

    @property
    def highest(self) -> float:
        return max(self.start, self.end)


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise MaskScheduleError(f"{key}: a masking rate must be a number in (0, 1), got {value!r}")
    return float(value)


def _span(value: Any, key: str) -> tuple[float, str]:
    """``tokens`` as (span, unit): a count (``2000``, ``2B``), ``2Btok``, ``1000ba`` or ``0.5dur``."""
    problem = (f"{key}: the span of the schedule: tokens (2000000, 2B, 2Btok), batches (1000ba) or a "
               f"fraction of the phase (0.5dur), got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MaskScheduleError(problem)
    try:
        number, unit = parse_time(value, key) if isinstance(value, str) else (0.0, "")
    except ConfigError:
        number, unit = 0.0, ""
    if not unit:  # no unit: a count of tokens
        try:
            number, unit = float(parse_count(str(value))), "tok"
        except (ValueError, OverflowError):
            raise MaskScheduleError(problem) from None
    if unit not in ("tok", "ba", "dur") or number <= 0:
        raise MaskScheduleError(problem)
    return number, unit


def parse_mask_schedule(value: Any, key: str = "data.mlm_probability") -> MaskSchedule:
    """A number or ``{start, end, shape, tokens}`` as a MaskSchedule; one-line errors naming the key."""
    if not isinstance(value, Mapping):
        rate = _rate(value, key)
        return MaskSchedule(rate, rate)
    unknown = sorted(set(value) - {"start", "end", "shape", "tokens"})
    if unknown:
        raise MaskScheduleError(f"{key}.{unknown[0]}: unknown key; a schedule has start, end, shape, tokens")
    for required in ("start", "end"):
        if required not in value:
            raise MaskScheduleError(f"{key}.{required}: required in a masking schedule (start, end, shape, tokens)")
    shape = value.get("shape", "linear")
    if shape not in SHAPES:
        raise MaskScheduleError(f"{key}.shape: unknown shape '{shape}'; valid choices: {', '.join(SHAPES)}")
    span, unit = _span(value["tokens"], f"{key}.tokens") if value.get("tokens") is not None else (1.0, "dur")
    return MaskSchedule(_rate(value["start"], f"{key}.start"), _rate(value["end"], f"{key}.end"), shape, span, unit)
