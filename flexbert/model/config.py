"""The model's options: ``FlexBertConfig``, every field a YAML key under ``model:``.

Loaded strictly through ``flexbert.config.from_dict`` (unknown keys, wrong types and impossible
values fail in one line naming the key); module names (norm, activation, mlp, block, attention
backend, init, MLM loss) are checked against the model's registries (flexbert/model/registries.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from flexbert.config import ConfigError, from_dict
from flexbert.model import registries as R
from flexbert.registry import unknown_choice


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
        R.check_names(self, p)

    def layer_is_global(self, i: int) -> bool:
        return self.local_attention == -1 or i % self.global_attn_every_n_layers == 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, prefix: str = "model") -> "FlexBertConfig":
        return from_dict(cls, data, prefix)


# The model's special-token ids come from the tokenizer (the one source of truth): an id the config
# leaves at FlexBertConfig's default is taken from the tokenizer; one set otherwise must agree with it.
SPECIAL_ID_FIELDS = {"pad_token_id": ("pad_id", "[PAD]"), "cls_token_id": ("cls_id", "[CLS]"),
                     "sep_token_id": ("sep_id", "[SEP]"), "mask_token_id": ("mask_id", "[MASK]")}


def tokenizer_mismatch(model: FlexBertConfig, special: Any, tokenizer_dir: str) -> Optional[str]:
    """One line naming the first model.* key that disagrees with the tokenizer's special tokens
    (``special``: flexbert/data/tokenizer.py's SpecialTokens), or None."""
    for key, (attr, token) in SPECIAL_ID_FIELDS.items():
        if getattr(model, key) != getattr(special, attr):
            return (f"model.{key}: {getattr(model, key)} disagrees with the tokenizer at {tokenizer_dir} "
                    f"({token} = {getattr(special, attr)}); set it to {getattr(special, attr)} or leave it out")
    if model.vocab_size < special.vocab_size:
        return (f"model.vocab_size: {model.vocab_size} is smaller than the tokenizer's vocabulary "
                f"({special.vocab_size} at {tokenizer_dir})")
    return None


def with_tokenizer_ids(model: FlexBertConfig, special: Any, tokenizer_dir: str) -> FlexBertConfig:
    """``model`` with the special ids it leaves at their defaults taken from the tokenizer;
    ConfigError (one line naming the key) when a set id or the vocabulary size disagrees with it."""
    defaults = FlexBertConfig()
    filled = {k: getattr(special, attr) for k, (attr, _) in SPECIAL_ID_FIELDS.items()
              if getattr(model, k) == getattr(defaults, k)}
    model = dataclasses.replace(model, **filled)
    problem = tokenizer_mismatch(model, special, tokenizer_dir)
    if problem:
        raise ConfigError(problem)
    return model
