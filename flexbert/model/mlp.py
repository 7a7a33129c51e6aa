"""Feed-forward layers.  ``glu`` is ModernBERT's GeGLU (SwiGLU with ``activation: silu``)."""

from __future__ import annotations

import torch
from torch import nn

from flexbert.model.activations import build_activation
from flexbert.model.registries import MLPS


@MLPS.register("mlp")
class MLP(nn.Module):
    """Wo(dropout(act(Wi(x)))), the original BERT feed-forward."""

    def __init__(self, config):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_in_bias)
        self.act = build_activation(config.activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Wo(self.drop(self.act(self.Wi(x))))


@MLPS.register("glu")
class GLU(nn.Module):
    """Wi projects to 2 x intermediate; the first half is activated and gated by the second."""

    def __init__(self, config):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_in_bias)
        self.act = build_activation(config.activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(input) * gate))


def build_mlp(config) -> nn.Module:
    return MLPS.get(config.mlp, "mlp")(config)
