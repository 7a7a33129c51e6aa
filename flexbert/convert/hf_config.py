"""The config half of the transformers ModernBERT conversion: ``FlexBertConfig`` <-> ``ModernBertConfig``.

Options ModernBertConfig cannot express raise ``ConversionError`` naming the option.  The weights
half (and the module overview) is ``flexbert/convert/hf.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

from transformers import ModernBertConfig

from flexbert.errors import FlexBertError
from flexbert.model.config import FlexBertConfig

# FlexBERT activation name <-> transformers ACT2FN name (exactly the same function).
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu": "relu"}
_ACT_FROM_HF = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu", "relu": "relu"}

# FlexBERT options that ModernBERT hard-wires: (option, value ModernBERT uses, why).
_FIXED_IN_HF = (
    ("rotary", True, "ModernBERT always uses RoPE"),
    ("embedding", "sans_pos", "ModernBERT has no learned position embeddings"),
    ("norm", "layernorm", "ModernBERT only has LayerNorm"),
    ("mlp", "glu", "ModernBERT's MLP is always a GLU"),
    ("block", "prenorm", "ModernBERT layers are pre-norm"),
    ("skip_first_prenorm", True, "ModernBERT's layer 0 never has attn_norm"),
    ("final_norm", True, "ModernBERT always applies final_norm"),
)


class ConversionError(FlexBertError, ValueError):
    """A model or config cannot be converted; the message names the option or key."""


# ---------------------------------------------------------------------------- config mapping
def _hf_attr(hf, name: str, default: Any = None) -> Any:
    return getattr(hf, name, default) if hasattr(hf, name) else default


def _hf_rope_thetas(hf) -> tuple[float, float]:
    """(global, local) theta from a 4.x config or a 5.x ``rope_parameters`` config."""
    g, l = _hf_attr(hf, "global_rope_theta"), _hf_attr(hf, "local_rope_theta")
    params = _hf_attr(hf, "rope_parameters")
    if isinstance(params, Mapping):
        g = g if g is not None else (params.get("full_attention") or {}).get("rope_theta")
        l = l if l is not None else (params.get("sliding_attention") or {}).get("rope_theta")
    if g is None:
        raise ConversionError("hf config: cannot find the global rope theta (global_rope_theta / rope_parameters)")
    return float(g), float(l if l is not None else g)


def _hf_global_every(hf) -> int:
    n = _hf_attr(hf, "global_attn_every_n_layers")
    layer_types = _hf_attr(hf, "layer_types")
    if n is None and layer_types:
        globals_ = [i for i, t in enumerate(layer_types) if t == "full_attention"]
        n = globals_[1] - globals_[0] if len(globals_) > 1 else len(layer_types)
    n = int(n or 1)
    if layer_types:
        expected = ["full_attention" if i % n == 0 else "sliding_attention" for i in range(len(layer_types))]
        if list(layer_types) != expected:
            raise ConversionError(f"hf config.layer_types: pattern {layer_types} is not 'global every {n} layers'")
    return n


def config_from_hf(hf_config) -> FlexBertConfig:
    """FlexBertConfig equivalent to a transformers ``ModernBertConfig``."""
    act = _hf_attr(hf_config, "hidden_activation", "gelu")
    head_act = _hf_attr(hf_config, "classifier_activation", "gelu")
    for key, name in (("hidden_activation", act), ("classifier_activation", head_act)):
        if name not in _ACT_FROM_HF:
            raise ConversionError(f"hf config.{key}: '{name}' has no FlexBERT equivalent; valid: {', '.join(_ACT_FROM_HF)}")
    global_theta, local_theta = _hf_rope_thetas(hf_config)
    attn_drop = float(_hf_attr(hf_config, "attention_dropout", 0.0))
    data = dict(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size,
        num_hidden_layers=hf_config.num_hidden_layers,
        num_attention_heads=hf_config.num_attention_heads,
        max_position_embeddings=hf_config.max_position_embeddings,
        embedding="sans_pos",
        norm="layernorm",
        norm_eps=float(hf_config.norm_eps),
        norm_bias=bool(hf_config.norm_bias),
        activation=_ACT_FROM_HF[act],
        mlp="glu",
        block="prenorm",
        skip_first_prenorm=True,
        final_norm=True,
        init_std=float(_hf_attr(hf_config, "initializer_range", 0.02)),
        init_cutoff_factor=float(_hf_attr(hf_config, "initializer_cutoff_factor", None) or 2.0),
        global_attn_every_n_layers=_hf_global_every(hf_config),
        local_attention=int(hf_config.local_attention),
        rotary=True,
        global_rope_theta=global_theta,
        local_rope_theta=local_theta,
        attn_qkv_bias=bool(hf_config.attention_bias),
        attn_out_bias=bool(hf_config.attention_bias),
        mlp_in_bias=bool(hf_config.mlp_bias),
        mlp_out_bias=bool(hf_config.mlp_bias),
        head_bias=bool(_hf_attr(hf_config, "classifier_bias", False)),
        decoder_bias=bool(_hf_attr(hf_config, "decoder_bias", True)),
        head_activation=_ACT_FROM_HF[head_act],
        embedding_dropout=float(_hf_attr(hf_config, "embedding_dropout", 0.0)),
        attention_dropout=attn_drop,
        attn_out_dropout=attn_drop,
        mlp_dropout=float(_hf_attr(hf_config, "mlp_dropout", 0.0)),
        sparse_prediction=bool(_hf_attr(hf_config, "sparse_prediction", False)),
        tie_word_embeddings=bool(_hf_attr(hf_config, "tie_word_embeddings", True)),
        num_labels=int(_hf_attr(hf_config, "num_labels", 2)),
        classifier_pooling=_hf_attr(hf_config, "classifier_pooling", "cls"),
        classifier_dropout=float(_hf_attr(hf_config, "classifier_dropout", 0.0)),
    )
    for ours, theirs in (("pad_token_id", "pad_token_id"), ("cls_token_id", "cls_token_id"), ("sep_token_id", "sep_token_id")):
        value = _hf_attr(hf_config, theirs)
        if value is not None:
            data[ours] = int(value)
    return FlexBertConfig.from_dict(data, prefix="model")


def config_to_hf(cfg: FlexBertConfig):
    """transformers ``ModernBertConfig`` for ``cfg``; raises ConversionError naming any option it
    cannot express."""
    for key, value, why in _FIXED_IN_HF:
        if getattr(cfg, key) != value:
            raise ConversionError(
                f"model.{key}={getattr(cfg, key)!r} cannot be exported to transformers' ModernBERT ({why}; needs {value!r})"
            )
    for a, b, hf_name, where in (("attn_qkv_bias", "attn_out_bias", "attention_bias", "Wqkv and Wo"),
                                 ("mlp_in_bias", "mlp_out_bias", "mlp_bias", "Wi and Wo")):
        if getattr(cfg, a) != getattr(cfg, b):
            raise ConversionError(f"model.{a} != model.{b} cannot be exported: ModernBERT has one {hf_name} for {where}")
    for key in ("activation", "head_activation"):
        if getattr(cfg, key) not in _ACT_TO_HF:
            raise ConversionError(f"model.{key}='{getattr(cfg, key)}' has no transformers equivalent; exportable: {', '.join(_ACT_TO_HF)}")
    all_global = cfg.local_attention == -1
    attn_drop = cfg.attention_dropout if cfg.attention_dropout == cfg.attn_out_dropout else 0.0
    return ModernBertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        hidden_activation=_ACT_TO_HF[cfg.activation],
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.init_std,
        initializer_cutoff_factor=cfg.init_cutoff_factor,
        norm_eps=cfg.norm_eps,
        norm_bias=cfg.norm_bias,
        pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.cls_token_id,
        eos_token_id=cfg.sep_token_id,
        cls_token_id=cfg.cls_token_id,
        sep_token_id=cfg.sep_token_id,
        global_rope_theta=cfg.global_rope_theta,
        local_rope_theta=cfg.local_rope_theta,
        attention_bias=cfg.attn_qkv_bias,
        attention_dropout=attn_drop,
        global_attn_every_n_layers=1 if all_global else cfg.global_attn_every_n_layers,
        local_attention=128 if all_global else cfg.local_attention,  # unused when every layer is global
        embedding_dropout=cfg.embedding_dropout,
        mlp_bias=cfg.mlp_in_bias,
        mlp_dropout=cfg.mlp_dropout,
        decoder_bias=cfg.decoder_bias,
        classifier_pooling=cfg.classifier_pooling,
        classifier_dropout=cfg.classifier_dropout,
        classifier_bias=cfg.head_bias,
        classifier_activation=_ACT_TO_HF[cfg.head_activation],
        # FlexBERT predicts sparsely only in training; transformers would do it whenever labels are
        # given (even in eval) and return (M, V) logits, so exported models predict densely.
        sparse_prediction=False,
        tie_word_embeddings=cfg.tie_word_embeddings,
        num_labels=cfg.num_labels,
        architectures=["ModernBertForMaskedLM"],
        model_type="modernbert",
    )
