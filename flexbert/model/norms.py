"""Normalisation layers.  Both take ``(dim, eps, bias)`` so blocks can build any of them alike."""

from __future__ import annotations

import torch
from torch import nn

from flexbert.model.registries import NORMS


@NORMS.register("layernorm")
class LayerNorm(nn.LayerNorm):
    """torch LayerNorm; ``bias=False`` gives ModernBERT's weight-only norm."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False):
        super().__init__(dim, eps=eps, bias=bias)


@NORMS.register("rmsnorm")
class RMSNorm(nn.Module):
    """Root-mean-square norm (no centring), computed in fp32 for stability under bf16."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        y = y.to(x.dtype) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


def build_norm(config) -> nn.Module:
    return NORMS.get(config.norm, "norm")(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
