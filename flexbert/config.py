"""Typed configuration: dataclasses with defaults in code, strict loading from dicts/YAML.

``from_dict`` turns a plain mapping (from YAML + ``key=value`` overrides merged by OmegaConf) into
a dataclass, rejecting unknown keys with a did-you-mean, wrong types, and impossible values with a
single line that names the offending key.  The code is the only source of defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from flexbert.registry import ConfigError, unknown_choice

__all__ = ["ConfigError", "FlexBertConfig", "IGNORE_INDEX", "from_dict", "to_dict", "load_yaml"]

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
    from omegaconf import OmegaConf  # local: keeps ``import flexbert`` light
    from omegaconf.errors import OmegaConfBaseException

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


# --------------------------------------------------------------------------- model options
@dataclass
class FlexBertConfig:
    """Every model option.  Defaults are ModernBERT-base (see README for the table)."""

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    max_position_embeddings: int = 8192  # used by absolute_pos embeddings and exported to HF

    # swappable modules (registry names)
    embedding: str = "sans_pos"  # sans_pos | absolute_pos
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_bias: bool = False
    activation: str = "gelu"  # gelu | gelu_tanh | silu | relu
    mlp: str = "glu"  # mlp | glu
    block: str = "prenorm"  # prenorm | postnorm | parallel
    skip_first_prenorm: bool = True  # layer 0 has no attn_norm (ModernBERT: embeddings are normed)
    final_norm: bool = True
    attention_backend: str = "auto"  # sdpa | flex | varlen | flash_attn | auto
    init: str = "full_megatron"  # normal | full_megatron
    init_std: float = 0.02
    init_cutoff_factor: float = 2.0

    # attention pattern
    global_attn_every_n_layers: int = 3  # layer i is global iff i % n == 0
    local_attention: int = 128  # window size in tokens (sees |q-k| <= window//2); -1: all global
    rotary: bool = True
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0

    # biases
    attn_qkv_bias: bool = False
    attn_out_bias: bool = False
    mlp_in_bias: bool = False
    mlp_out_bias: bool = False
    head_bias: bool = False  # head.dense
    decoder_bias: bool = True
    head_activation: str = "gelu"

    # dropouts
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0  # on attention probabilities
    attn_out_dropout: float = 0.1  # on the attention output (the paper's only dropout)
    mlp_dropout: float = 0.0

    # heads
    sparse_prediction: bool = True
    tie_word_embeddings: bool = True
    num_labels: int = 2
    classifier_pooling: str = "cls"  # cls | mean
    classifier_dropout: float = 0.0

    # special tokens
    pad_token_id: int = 50283
    cls_token_id: int = 50281
    sep_token_id: int = 50282
    mask_token_id: int = 50284

    mlm_loss: str = "auto"  # auto | chunked | liger | plain (flexbert/model/loss.py)

    def validate(self, prefix: str = "model") -> None:
        p = (prefix + ".") if prefix else ""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{p}{key}: {msg}")

        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_attention_heads:
            raise bad(
                "num_attention_heads",
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}",
            )
        if self.rotary and (self.hidden_size // self.num_attention_heads) % 2:
            raise bad("num_attention_heads", "rotary embeddings need an even head dimension")
        if self.global_attn_every_n_layers < 1:
            raise bad("global_attn_every_n_layers", f"must be >= 1, got {self.global_attn_every_n_layers}")
        if self.local_attention != -1 and (self.local_attention < 2 or self.local_attention % 2):
            raise bad("local_attention", f"window must be a positive even number or -1, got {self.local_attention}")
        for key in ("global_rope_theta", "local_rope_theta", "norm_eps", "init_std", "init_cutoff_factor"):
            if getattr(self, key) <= 0:
                raise bad(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("embedding_dropout", "attention_dropout", "attn_out_dropout", "mlp_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ConfigError(unknown_choice(f"{p}classifier_pooling", "pooling", self.classifier_pooling, ("cls", "mean")))
        if self.embedding == "sans_pos" and not self.rotary:
            raise bad("rotary", "sans_pos embeddings carry no position: enable rotary or use absolute_pos")
        # registry names: imported lazily so that config stays importable on its own
        from flexbert.model import registries as R

        R.check_names(self, p)

    def layer_is_global(self, i: int) -> bool:
        return self.local_attention == -1 or i % self.global_attn_every_n_layers == 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, prefix: str = "model") -> "FlexBertConfig":
        return from_dict(cls, data, prefix)
