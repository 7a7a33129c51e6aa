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
import types
import typing
from typing import Any, Mapping

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexbert.registry import ConfigError, unknown_choice

__all__ = ["ConfigError", "IGNORE_INDEX", "from_dict", "to_dict", "load_yaml", "options_from_file"]

# The label of every position the MLM / classification loss ignores (transformers' convention).
# The contract between data (which writes it) and model (whose loss skips it); both sit above this
# module, so it lives here, once.
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- generic loading
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass  # try the next member; the message below names them all
        raise ConfigError(
            f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {type(value).__name__} {value!r}"
        )
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


def load_yaml(path: str | None, overrides: list[str] | None = None) -> dict:
    """Load a YAML file (optional) and merge ``key=value`` overrides; returns a plain dict."""
    try:
        base = OmegaConf.load(path) if path else OmegaConf.create({})
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except Exception as e:  # YAML syntax errors
        raise ConfigError(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' is not of the form key=value")
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
