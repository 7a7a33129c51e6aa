"""Optimizer construction: parameter groups, fully decoupled weight decay, CPU-safe kernels."""

import pytest
import torch

from flexbert.config import ConfigError, from_dict
from flexbert.model.config import FlexBertConfig
from flexbert.train.optim import OptimizerConfig, build_optimizer, override_hyperparameters, param_groups


def tiny_model():
    from flexbert.model.model import FlexBertForMaskedLM

    cfg = FlexBertConfig.from_dict(dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=2, attention_backend="sdpa", head_bias=True,
                                        attn_qkv_bias=True, pad_token_id=0, cls_token_id=1, sep_token_id=2,
                                        mask_token_id=3))
    torch.manual_seed(0)
    return FlexBertForMaskedLM(cfg)


def test_no_decay_on_biases_and_norms():
    model = tiny_model()
    groups = param_groups(model, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 1e-5 and groups[1]["weight_decay"] == 0.0
    assert "model.embeddings.norm.weight" in plain
    assert "model.final_norm.weight" in plain and "head.norm.weight" in plain
    assert "decoder.bias" in plain and any(n.endswith("Wqkv.bias") for n in plain)
    assert all("norm" in n or n.endswith("bias") for n in plain)
    assert "model.embeddings.tok_embeddings.weight" in decay
    assert any(n.endswith("attn.Wqkv.weight") for n in decay) and any(n.endswith("mlp.Wo.weight") for n in decay)
    # every trainable parameter exactly once (the tied decoder weight is the embedding)
    assert len(decay) + len(plain) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["stable_adamw", "adamw"])
def test_fully_decoupled_weight_decay_and_cpu_step(name):
    model = tiny_model()
    cfg = OptimizerConfig(name=name, lr=1e-3, weight_decay=0.1, max_lr=2e-3)
    opt = build_optimizer(model, cfg, on_cuda=False)
    assert all(g["triton"] is False for g in opt.param_groups)  # CPU: never the Triton kernel
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():  # zero gradients: the step is weight decay alone
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if "norm" in n or n.endswith("bias"):
            torch.testing.assert_close(p, before[n], rtol=0, atol=0)
        else:
            # fully decoupled: p <- p * (1 - (lr / max_lr) * weight_decay) = p * 0.95
            torch.testing.assert_close(p, before[n] * (1 - 0.5 * 0.1), rtol=1e-6, atol=1e-7)


def test_override_after_load():
    model = tiny_model()
    old = build_optimizer(model, OptimizerConfig(lr=8e-4, weight_decay=1e-5))
    new_cfg = OptimizerConfig(lr=3e-4, weight_decay=1e-6, max_lr=3e-4, betas=[0.8, 0.95])
    opt = build_optimizer(model, new_cfg)
    opt.load_state_dict(old.state_dict())  # what a checkpoint load does to the groups
    assert opt.param_groups[0]["lr"] == 8e-4
    override_hyperparameters(opt, new_cfg)
    g0, g1 = opt.param_groups
    assert g0["initial_lr"] == 3e-4 and g0["weight_decay"] == 1e-6 and g0["max_lr"] == 3e-4
    assert g1["weight_decay"] == 0.0 and g1["max_lr"] == 3e-4
    # the betas under the names the optimizer (optimi) reads, and no stray "betas" key beside them
    assert all((g["beta1"], g["beta2"]) == (0.8, 0.95) and "betas" not in g for g in (g0, g1))


def test_bad_optimizer_config():
    with pytest.raises(ConfigError, match="did you mean 'adamw'"):
        from_dict(OptimizerConfig, {"name": "adamww"}, "optimizer")
    with pytest.raises(ConfigError, match="optimizer.betas"):
        from_dict(OptimizerConfig, {"betas": [0.9, 1.5]}, "optimizer")
