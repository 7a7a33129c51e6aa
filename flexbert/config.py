"""Typed configuration: dataclasses with defaults in code, strict loading from dicts/YAML.

The bottom of the house: every section's dataclass (the model's in ``flexbert/model/config.py``, the
data's in ``flexbert/data/config.py``, the run's in ``flexbert/train/config.py``) loads through here.

``from_dict`` turns a plain mapping (from YAML + ``key=value`` overrides merged by OmegaConf) into
a dataclass, rejecting unknown keys with a did-you-mean, wrong types, and impossible values with a
single line that names the offending key.  The code is the only source of defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from typing import Any, Mapping, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexbert.registry import ConfigError, unknown_choice

__all__ = ["ConfigError", "IGNORE_INDEX", "from_dict", "to_dict", "load_yaml", "parse_time", "at_least", "finite", "count",
           "options_from_file"]

# The label of every position the MLM / classification loss ignores (transformers' convention).
# The contract between data (which writes it) and model (whose loss skips it); both sit above this
# module, so it lives here, once.
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- generic loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce_union(value: Any, args: tuple, key: str) -> Any:
    """The first member of ``Union[args]`` that takes ``value``; a mapping given for an optional
    section (``Optional[SomeConfig]``) fails with that section's own error, which names the key."""
    if value is None and type(None) in args:
        return None
    section = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError as e:  # try the next member; the message below names them all
            if section is None and dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                section = e
    if section is not None:
        raise section
    raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {type(value).__name__} {value!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} options, got {value!r}")
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(unknown_choice(None, "config key", k, names, valid="valid keys here", shown=where))
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def _yaml_problem(e: Exception) -> str:
    """PyYAML's own words for a syntax error, with the line it is on ("line 3: expected ...")."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}: {problem}"
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_yaml(path: str | None, overrides: list[str] | None = None) -> dict:
    """Load a YAML file (optional) and merge ``key=value`` overrides; returns a plain dict."""
    try:
        base = OmegaConf.load(path) if path else OmegaConf.create({})
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except Exception as e:  # YAML syntax errors
        raise ConfigError(f"cannot parse config {path}: {_yaml_problem(e)} (fix the YAML there)") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value")
    # ``key=""`` reaches us as ``key=`` (the shell drops the quotes): the empty string, as written
    # (OmegaConf reads a bare ``key=`` as null, the default); ``key=null`` is null
    overrides = [f"{ov}''" if ov.endswith("=") else ov for ov in overrides or []]
    try:
        cli = OmegaConf.from_dotlist(list(overrides or []))
        merged = OmegaConf.merge(base, cli)
        out = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad override or interpolation: {str(e).splitlines()[0]}") from None
    if not isinstance(out, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return out


def options_from_file(cls: type, path: str | None, given: Mapping[str, Any]) -> Any:
    """Dataclass ``cls`` from a YAML file of its keys (a command's ``--config``) with ``given`` (the
    command line; None = not given) over them.  A key of the file that ``cls`` lacks, or a value there
    of the wrong type, fails in one line naming the file and the key; a ``config`` field records the file."""
    raw = load_yaml(path) if path else {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for k, v in raw.items():
        if k not in names:
            raise ConfigError(f"{path}: " + unknown_choice(None, "config key", k, names, valid="valid keys"))
        try:
            _coerce(v, hints[k], k)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    merged = {**raw, **{k: v for k, v in given.items() if v is not None}}
    if path and "config" in names:
        merged["config"] = path
    return from_dict(cls, merged, "")


def at_least(minimum: int):
    """An argparse ``type=``: an int >= ``minimum``, else argparse's one-line usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def finite(lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
           hi_open: bool = False):
    """An argparse ``type=``: a finite float within [lo, hi] (an end left out is unbounded; ``lo_open``
    / ``hi_open`` exclude that end), else argparse's one-line error naming the flag.  ``nan``,
    ``inf`` and words are refused: a merge weight, a learning rate or a fraction is a number."""
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    if lo is not None and hi is not None:
        wanted = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    else:
        wanted = f"a number {left or right}".strip() if (left or right) else "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


_COUNT_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_count(text: str) -> int:
    """``"20M"``, ``"500k"``, ``"1e6"``, ``"2_000_000"`` -> a whole number > 0; ValueError otherwise."""
    t = str(text).strip().lower().replace("_", "")
    mult = _COUNT_SUFFIX.get(t[-1:], 1)
    value = float(t[:-1] if mult > 1 else t) * mult
    if not value > 0 or value != int(value) or value == float("inf"):
        raise ValueError(text)
    return int(value)


def count(text: str) -> int:
    """An argparse ``type=``: a count such as 2M, 500K or 2000000 (> 0), else argparse's one-line error."""
    try:
        return parse_count(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a count such as 2M, 500K or 2000000, got {text!r}") from None


# --------------------------------------------------------------------------- time strings
# Durations as the trainer reads them: "3Btok", "2000ba", "0.1dur" (a fraction of max_duration).
# Here, at the bottom, because the data layer's masking schedule reads them too.
_UNITS = ("tok", "ba", "sp", "ep", "dur")
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_TIME_RE = re.compile(r"^\s*([0-9][0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9]+)?)\s*([KMBT]?)\s*(tok|ba|sp|ep|dur)\s*$")


def parse_time(value: Any, key: str = "time") -> tuple[float, str]:
    """``"3Btok"`` -> ``(3e9, "tok")``; raises ConfigError with the key on anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} has no unit; write e.g. '{value}ba', '{value}tok' or '{value}dur'")
    m = _TIME_RE.match(str(value))
    if not m:
        raise ConfigError(
            f"{key}: cannot read time {value!r}; expected a number with unit {'|'.join(_UNITS)} "
            "and optional K/M/B/T, e.g. '3Btok', '500ba', '0.1dur'"
        )
    number = float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2)]
    unit = m.group(3)
    if unit == "dur" and not 0.0 <= number <= 1.0:
        raise ConfigError(f"{key}: a 'dur' time is a fraction of max_duration in [0, 1], got {value!r}")
    if unit != "dur" and number != int(number):
        raise ConfigError(f"{key}: {value!r} must be a whole number of {unit}")
    return number, unit
