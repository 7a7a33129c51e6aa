"""Weight initialisation schemes.

Every matrix is drawn from a normal truncated at ``+-init_cutoff_factor * std``; biases are zero
and norms start at identity.  ``full_megatron`` additionally scales the output projections (the
matrices that write into the residual stream: ``attn.Wo``, ``mlp.Wo``, and ``head.dense`` as
transformers' ModernBERT does) by ``1 / sqrt(2 * num_layers)``, so the residual's variance does not
grow with depth.  The sequence classifier uses ``hidden_size ** -0.5``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flexbert.model.registries import INITS

_OUTPUT_PROJECTIONS = ("attn.Wo", "mlp.Wo", "head.dense")


def _trunc_normal(weight: torch.Tensor, std: float, cutoff: float) -> None:
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


@torch.no_grad()
def _init(model: nn.Module, config, out_scale: float) -> None:
    std, cutoff = config.init_std, config.init_cutoff_factor
    seen: set[int] = set()  # a tied decoder shares the embedding's weight: init it once
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
            if id(module.weight) in seen:
                continue
            seen.add(id(module.weight))
            s = std
            if name.endswith(_OUTPUT_PROJECTIONS):
                s = std * out_scale
            elif name.endswith("classifier"):
                s = config.hidden_size**-0.5
            _trunc_normal(module.weight, s, cutoff)
        elif hasattr(module, "weight") and isinstance(getattr(module, "weight"), nn.Parameter):
            # norms: identity at start
            if module.weight.dim() == 1:
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()


@INITS.register("normal")
def normal_init(model: nn.Module, config) -> None:
    _init(model, config, out_scale=1.0)


@INITS.register("full_megatron")
def full_megatron_init(model: nn.Module, config) -> None:
    _init(model, config, out_scale=1.0 / math.sqrt(2.0 * config.num_hidden_layers))


def init_weights(model: nn.Module, config) -> None:
    INITS.get(config.init, "init")(model, config)
