"""Typed ``data.streams`` entries: one named source of MDS shards and its weight.

Kept apart from ``streams.py`` (which builds Streaming datasets) so that ``data/config.py`` can
validate a mixture without importing the dataset code, and the dataset code can read the config
without importing back: the two used to import each other.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from flexbert.config import ConfigError, from_dict
from flexbert.data.fingerprint import STATS

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # names become metric keys (metrics/eval/<name>/...)


@dataclass
class StreamConfig:
    local: str = ""  # folder with <split>/index.json; the download cache when remote is set
    remote: Optional[str] = None  # s3://... (Streaming downloads into local)
    proportion: Optional[float] = None  # relative weight (all streams, or none)
    repeat: Optional[float] = None  # absolute: passes over this stream per epoch
    choose: Optional[int] = None  # absolute: documents from this stream per epoch
    eval: bool = True  # evaluate on this stream's eval split (a metric per source)

    def validate(self, prefix: str = "") -> None:
        p = f"{prefix}." if prefix else ""
        if not self.local and not self.remote:
            raise ConfigError(f"{p}local: set the folder of this stream's MDS shards (or remote)")
        given = [k for k in ("proportion", "repeat", "choose") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"{p}{given[1]}: a stream takes at most one of proportion, repeat, choose (got {', '.join(given)})")
        for key in ("proportion", "repeat"):
            v = getattr(self, key)
            if v is not None and not v > 0:
                raise ConfigError(f"{p}{key}: must be > 0, got {v}")
        if self.choose is not None and self.choose < 1:
            raise ConfigError(f"{p}choose: must be >= 1, got {self.choose}")


def load_streams(streams: Mapping[str, Any], prefix: str = "data") -> dict[str, StreamConfig]:
    """``data.streams`` as typed, validated ``StreamConfig``s (one-line errors naming the key)."""
    out: dict[str, StreamConfig] = {}
    for name, spec in streams.items():
        key = f"{prefix}.streams.{name}" if prefix else f"streams.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(f"{key}: stream names are letters, digits, '_', '-', '.' (they name metrics)")
        if isinstance(spec, StreamConfig):
            spec.validate(key)
            out[name] = spec
        elif isinstance(spec, Mapping):
            out[name] = from_dict(StreamConfig, spec, key)
        else:
            raise ConfigError(f"{key}: expected a mapping with local/remote and proportion|repeat|choose, got {spec!r}")
    relative = [n for n, s in out.items() if s.proportion is not None]
    if relative and len(relative) != len(out):
        other = next(n for n in out if n not in relative)
        raise ConfigError(f"{prefix}.streams.{other}: give every stream a proportion or none of them "
                          f"(relative and absolute weights do not mix; {', '.join(relative)} have one)")
    return out


def stream_tokens(s: StreamConfig, split: str = "train") -> Optional[int]:
    """Tokens in a stream's split, from its shards' stats.json (flexbert/data/shard_writer.py); None
    when the folder has none (shards written elsewhere, or only in an object store)."""
    path = os.path.join(s.local, STATS) if s.local else ""
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        splits = (json.load(f).get("splits") or {})
    tokens = (splits.get(split) or {}).get("tokens")
    return int(tokens) if tokens else None


def temperature_proportions(streams: Mapping[str, StreamConfig], tau: float, split: str = "train",
                            key: str = "data.streams_temperature") -> dict[str, float]:
    """Each stream's share ``size**tau / sum(size**tau)``, size = its tokens (stats.json): tau = 1
    samples in proportion to size, tau = 0 uniformly over sources, in between up-samples the small."""
    sizes = {}
    for name, s in streams.items():
        n = stream_tokens(s, split)
        if n is None:
            raise ConfigError(f"{key}: stream '{name}' ({s.local or s.remote}) has no token count (no stats.json with a "
                              f"'{split}' split next to its shards); give the streams proportions instead")
        sizes[name] = float(n)
    weights = {n: size ** tau for n, size in sizes.items()}
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()}
