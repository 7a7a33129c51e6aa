"""Prediction heads and pooling, on unpadded hidden states."""

from __future__ import annotations

import torch
from torch import nn

from flexbert.model.activations import build_activation
from flexbert.model.attention import BatchInfo
from flexbert.model.norms import build_norm


class PredictionHead(nn.Module):
    """dense -> activation -> norm: ModernBERT's ``head`` for both MLM and classification."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.head_bias)
        self.act = build_activation(config.head_activation, "head_activation")
        self.norm = build_norm(config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(h)))


def pool(h: torch.Tensor, batch: BatchInfo, how: str) -> torch.Tensor:
    """One vector per segment from unpadded ``h`` (T, H).

    ``cls`` takes each segment's first token; ``mean`` averages over the segment's tokens.  The
    hidden states are unpadded, so padding can never leak into the mean (a defect of the
    reference implementation).
    """
    cu = batch.cu_seqlens.long()
    if how == "cls":
        return h[cu[:-1]]
    if how == "mean":
        n = cu.numel() - 1
        sums = h.new_zeros(n, h.shape[-1]).index_add_(0, batch.seq_ids, h)
        lens = (cu[1:] - cu[:-1]).clamp(min=1).to(h.dtype)
        return sums / lens[:, None]
    raise ValueError(f"classifier_pooling: unknown pooling '{how}'; valid choices: cls, mean")
