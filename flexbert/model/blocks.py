"""Transformer blocks: how attention, MLP, norms and residuals are wired.

Norm modules are named ``attn_norm`` / ``mlp_norm`` in every block so that the pre-norm block's
state dict is transformers' ModernBERT layer verbatim.  A skipped norm is *no module* (``None``),
not an Identity, so the state dict has no key for it, exactly like layer 0 in ModernBERT.
"""

from __future__ import annotations

import torch
from torch import nn

from flexbert.model.attention import BatchInfo, FlexBertAttention
from flexbert.model.mlp import build_mlp
from flexbert.model.norms import build_norm
from flexbert.model.registries import BLOCKS


@BLOCKS.register("prenorm")
class PreNormBlock(nn.Module):
    """h += attn(attn_norm(h)); h += mlp(mlp_norm(h)).  ModernBERT's block.

    With ``skip_first_prenorm`` layer 0 has no attn_norm: the embeddings are already normed.
    """

    def __init__(self, config, layer_id: int):
        super().__init__()
        skip = config.skip_first_prenorm and layer_id == 0
        self.attn_norm = None if skip else build_norm(config)
        self.attn = FlexBertAttention(config, layer_id)
        self.mlp_norm = build_norm(config)
        self.mlp = build_mlp(config)

    def forward(self, h: torch.Tensor, batch: BatchInfo) -> torch.Tensor:
        x = h if self.attn_norm is None else self.attn_norm(h)
        h = h + self.attn(x, batch)
        return h + self.mlp(self.mlp_norm(h))


@BLOCKS.register("postnorm")
class PostNormBlock(nn.Module):
    """Original BERT: h = attn_norm(h + attn(h)); h = mlp_norm(h + mlp(h))."""

    def __init__(self, config, layer_id: int):
        super().__init__()
        self.attn = FlexBertAttention(config, layer_id)
        self.attn_norm = build_norm(config)
        self.mlp = build_mlp(config)
        self.mlp_norm = build_norm(config)

    def forward(self, h: torch.Tensor, batch: BatchInfo) -> torch.Tensor:
        h = self.attn_norm(h + self.attn(h, batch))
        return self.mlp_norm(h + self.mlp(h))


@BLOCKS.register("parallel")
class ParallelBlock(nn.Module):
    """GPT-J / PaLM style: x = attn_norm(h); h = h + attn(x) + mlp(x) (one norm, one residual)."""

    def __init__(self, config, layer_id: int):
        super().__init__()
        skip = config.skip_first_prenorm and layer_id == 0
        self.attn_norm = None if skip else build_norm(config)
        self.attn = FlexBertAttention(config, layer_id)
        self.mlp = build_mlp(config)

    def forward(self, h: torch.Tensor, batch: BatchInfo) -> torch.Tensor:
        x = h if self.attn_norm is None else self.attn_norm(h)
        return h + self.attn(x, batch) + self.mlp(x)


def build_block(config, layer_id: int) -> nn.Module:
    return BLOCKS.get(config.block, "block")(config, layer_id)
