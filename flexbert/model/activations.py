"""Activation functions by name.  ``gelu`` is the exact (erf) GELU that ModernBERT uses."""

from __future__ import annotations

from functools import partial

from torch import nn

from flexbert.model.registries import ACTIVATIONS

ACTIVATIONS.register("gelu")(partial(nn.GELU, approximate="none"))
ACTIVATIONS.register("gelu_tanh")(partial(nn.GELU, approximate="tanh"))
ACTIVATIONS.register("silu")(nn.SiLU)
ACTIVATIONS.register("relu")(nn.ReLU)


def build_activation(name: str, key: str = "activation") -> nn.Module:
    return ACTIVATIONS.get(name, key)()
