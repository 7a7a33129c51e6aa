"""Learning-rate schedules as Composer schedulers, counted in tokens (or batches, or fractions).

Each schedule is a small dataclass implementing Composer's ``ComposerScheduler`` protocol: called
with the trainer ``State`` it returns the multiplier of the peak LR for the *current* timestamp.
Times are strings such as ``"3Btok"``, ``"2000ba"`` or ``"0.1dur"`` (a fraction of
``max_duration``); ``K/M/B/T`` suffixes and ``_`` separators are accepted (``1_719Btok``).

Why tokens: under batch-size warmup the number of tokens per step changes, so a schedule counted in
steps would stretch the paper's token-based warmup.  Composer's own stepping evaluates the schedule
*after* a batch but *before* its timestamp is advanced (one batch late); ``ScheduleStepper`` in
``callbacks.py`` instead steps the schedulers at ``BATCH_START``, so the LR used by a batch is
exactly ``peak * f(tokens seen before that batch)``.

The decay shapes (``frac`` runs from 0 to 1 over the decay phase)::

    linear          alpha_f + (1 - alpha_f) * (1 - frac)
    one_minus_sqrt  alpha_f + (1 - alpha_f) * (1 - sqrt(frac))        (the paper's decay)
    cosine          alpha_f + (1 - alpha_f) * 0.5 * (1 + cos(pi * frac))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from flexbert.config import ConfigError, from_dict, parse_time
from flexbert.registry import Registry, unknown_choice

SCHEDULERS: Registry = Registry("scheduler")

# --------------------------------------------------------------------------- time arithmetic
def _elapsed_and_point(value: str, state, ssr: float, key: str) -> tuple[float, float, str]:
    """(elapsed in the point's unit, the point in that unit, unit) for time string ``value``."""
    number, unit = parse_time(value, key)
    if unit == "dur":
        max_dur = state.max_duration
        if max_dur is None:
            raise RuntimeError(f"{key}: a 'dur' time needs max_duration")
        unit = {"tok": "tok", "ba": "ba", "sp": "sp", "ep": "ep"}[_unit_name(max_dur.unit)]
        number = number * max_dur.value
    number *= ssr
    return _elapsed(state, unit), number, unit


def _unit_name(unit) -> str:
    return {"tok": "tok", "ba": "ba", "sp": "sp", "ep": "ep"}[str(unit.value)]


def _elapsed(state, unit: str) -> float:
    ts = state.timestamp
    return float({"tok": ts.token, "ba": ts.batch, "sp": ts.sample, "ep": ts.epoch}[unit].value)


def _max_point(state, ssr: float, t_max: str, key: str) -> tuple[float, str]:
    _, point, unit = _elapsed_and_point(t_max, state, ssr, key)
    return point, unit


def _same_unit(a: str, b: str, what: str) -> None:
    if a != b:
        raise ConfigError(f"scheduler: {what} must be in the same unit ({a} vs {b}); use 'dur' fractions or one unit")


def warmup_factor(state, ssr: float, t_warmup: str) -> float:
    """Linear warmup from 0 to 1 over ``t_warmup`` (1.0 once done or when t_warmup is 0)."""
    elapsed, point, _ = _elapsed_and_point(t_warmup, state, ssr, "scheduler.t_warmup")
    if point <= 0 or elapsed >= point:
        return 1.0
    return elapsed / point


DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda f: 1.0 - f,
    "one_minus_sqrt": lambda f: 1.0 - math.sqrt(f),
    "cosine": lambda f: 0.5 * (1.0 + math.cos(math.pi * f)),
}


def decay_value(shape: str, frac: float, alpha_f: float) -> float:
    frac = min(max(frac, 0.0), 1.0)
    return alpha_f + (1.0 - alpha_f) * DECAY_SHAPES[shape](frac)


def _check_shape(shape: str) -> None:
    if shape not in DECAY_SHAPES:
        raise ConfigError(unknown_choice("scheduler.decay_shape", "shape", shape, DECAY_SHAPES))


def _check_times(**times: str) -> None:
    for k, v in times.items():
        parse_time(v, f"scheduler.{k}")


# --------------------------------------------------------------------------- the schedules
@SCHEDULERS.register("constant_with_warmup")
@dataclass
class ConstantWithWarmup:
    """Linear warmup, then the peak LR for the rest of the run (the paper's pretraining phase)."""

    t_warmup: str = "0ba"

    def validate(self, prefix: str = "scheduler") -> None:
        _check_times(t_warmup=self.t_warmup)

    def __call__(self, state, ssr: float = 1.0) -> float:
        return warmup_factor(state, ssr, self.t_warmup)


@SCHEDULERS.register("warmup_stable_decay")
@dataclass
class WarmupStableDecay:
    """Trapezoidal: linear warmup, constant, then a decay over the last ``t_decay`` of the run."""

    t_warmup: str = "0ba"
    t_decay: str = "0.1dur"  # length of the final decay phase
    decay_shape: str = "one_minus_sqrt"  # linear | one_minus_sqrt | cosine
    alpha_f: float = 0.0  # final LR as a fraction of the peak
    t_max: str = "1dur"  # where the decay ends (the end of the run)

    def validate(self, prefix: str = "scheduler") -> None:
        _check_times(t_warmup=self.t_warmup, t_decay=self.t_decay, t_max=self.t_max)
        _check_shape(self.decay_shape)
        if not 0.0 <= self.alpha_f <= 1.0:
            raise ConfigError(f"{prefix}.alpha_f: must be in [0, 1], got {self.alpha_f}")

    def __call__(self, state, ssr: float = 1.0) -> float:
        warm = warmup_factor(state, ssr, self.t_warmup)
        t_max, unit = _max_point(state, ssr, self.t_max, "scheduler.t_max")
        _, t_decay, unit_d = _elapsed_and_point(self.t_decay, state, ssr, "scheduler.t_decay")
        _same_unit(unit, unit_d, "t_decay and t_max")
        if t_decay <= 0:
            return warm
        start = t_max - t_decay
        frac = (_elapsed(state, unit) - start) / t_decay
        if frac <= 0:
            return warm
        return warm * decay_value(self.decay_shape, frac, self.alpha_f)


@dataclass
class _WarmupThenDecay:
    """Optional linear warmup, then a decay of shape ``shape`` from the peak to ``alpha_f`` at ``t_max``."""

    shape: ClassVar[str]
    t_warmup: str = "0ba"
    alpha_f: float = 0.0
    t_max: str = "1dur"

    def validate(self, prefix: str = "scheduler") -> None:
        _check_times(t_warmup=self.t_warmup, t_max=self.t_max)
        if not 0.0 <= self.alpha_f <= 1.0:
            raise ConfigError(f"{prefix}.alpha_f: must be in [0, 1], got {self.alpha_f}")

    def __call__(self, state, ssr: float = 1.0) -> float:
        return _warmup_then_decay(state, ssr, self.t_warmup, self.t_max, self.shape, self.alpha_f)


@SCHEDULERS.register("one_minus_sqrt")
@dataclass
class OneMinusSqrt(_WarmupThenDecay):
    """The paper's decay phase (base-decay: 50B tokens, peak 3e-4 -> 0.001x): ``1 - sqrt``."""

    shape: ClassVar[str] = "one_minus_sqrt"


@SCHEDULERS.register("cosine_with_warmup")
@dataclass
class CosineWithWarmup(_WarmupThenDecay):
    """Linear warmup, then a cosine decay to ``alpha_f`` at ``t_max``."""

    shape: ClassVar[str] = "cosine"


def _warmup_then_decay(state, ssr: float, t_warmup: str, t_max: str, shape: str, alpha_f: float) -> float:
    elapsed_w, t_w, unit_w = _elapsed_and_point(t_warmup, state, ssr, "scheduler.t_warmup")
    if t_w > 0 and elapsed_w < t_w:
        return elapsed_w / t_w
    t_end, unit = _max_point(state, ssr, t_max, "scheduler.t_max")
    if t_w > 0:
        _same_unit(unit_w, unit, "t_warmup and t_max")
    span = t_end - t_w
    if span <= 0:
        return alpha_f
    frac = (_elapsed(state, unit) - t_w) / span
    return decay_value(shape, frac, alpha_f)


# --------------------------------------------------------------------------- parsing
def parse_scheduler(spec: Mapping[str, Any] | None, prefix: str = "scheduler"):
    """``{"name": "warmup_stable_decay", "t_warmup": "3Btok", ...}`` -> the schedule: a plain dataclass
    (the name checked against SCHEDULERS, the arguments against its fields), called with the trainer state."""
    spec = dict(spec or {})
    name = spec.pop("name", "constant_with_warmup")
    try:
        cls = SCHEDULERS.get(str(name), key=f"{prefix}.name")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return from_dict(cls, spec, prefix)
