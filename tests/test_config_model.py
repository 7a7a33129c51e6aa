"""Model config loading: bad names, keys, types and values fail with one line naming the key."""

from __future__ import annotations

import pytest

from flexbert.config import ConfigError, from_dict
from flexbert.model.config import FlexBertConfig
from flexbert.model import registries as R

R.load_all()
NAME_FIELDS = sorted(R.NAME_FIELDS)


def load(**model):
    return FlexBertConfig.from_dict(model, prefix="model")


def error_of(**model) -> str:
    with pytest.raises(ConfigError) as e:
        load(**model)
    msg = str(e.value)
    assert "\n" not in msg, "errors must be one line"
    return msg


def test_bad_norm_name_suggests_and_lists_choices():
    assert error_of(norm="rmsnrom") == (
        "model.norm: unknown norm 'rmsnrom' (did you mean 'rmsnorm'?); valid choices: layernorm, rmsnorm"
    )


@pytest.mark.parametrize("field", NAME_FIELDS)
def test_every_name_field_is_checked(field):
    msg = error_of(**{field: "nonsense_name"})
    registry = R.NAME_FIELDS[field]
    assert msg.startswith(f"model.{field}: unknown {registry.kind} 'nonsense_name'")
    assert msg.endswith("valid choices: " + ", ".join(registry.choices))


def test_every_registered_choice_is_accepted():
    for field in NAME_FIELDS:
        for choice in R.NAME_FIELDS[field].choices:
            load(**{field: choice})


def test_unknown_key_did_you_mean():
    msg = error_of(hiden_size=128)
    assert msg.startswith("unknown config key 'model.hiden_size' (did you mean 'hidden_size'?)")


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(hidden_size="big"), "model.hidden_size"),
        (dict(sparse_prediction="yes"), "model.sparse_prediction"),
        (dict(norm=3), "model.norm"),
        (dict(local_attention=127), "model.local_attention"),
        (dict(global_attn_every_n_layers=0), "model.global_attn_every_n_layers"),
        (dict(hidden_size=100, num_attention_heads=3), "model.num_attention_heads"),
        (dict(attn_out_dropout=1.5), "model.attn_out_dropout"),
        (dict(classifier_pooling="max"), "model.classifier_pooling"),
        (dict(rotary=False), "model.rotary"),  # sans_pos + no rotary = no positions at all
    ],
)
def test_bad_values_name_the_key(kwargs, key):
    assert error_of(**kwargs).startswith(key + ":")


def test_nested_prefix_is_reported():
    from dataclasses import dataclass, field

    @dataclass
    class Top:
        model: FlexBertConfig = field(default_factory=FlexBertConfig)

    with pytest.raises(ConfigError, match=r"^model\.mlp: unknown mlp 'gluu' \(did you mean 'glu'\?\)"):
        from_dict(Top, {"model": {"mlp": "gluu"}})


def test_defaults_are_modernbert_base():
    cfg = FlexBertConfig()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (768, 22, 12, 1152)
    assert [cfg.layer_is_global(i) for i in range(22)].count(True) == 8
