"""The one attention module, and the per-batch facts every layer shares.

``BatchInfo`` is built once per forward by the encoder: document ids and positions (restarting at
0 for each document), whether attention is causal (a Python bool: the objective, never a tensor),
RoPE cos/sin for each theta in use, the resolved backend and whatever that backend prepared
(masks, indices).  Layers only read it, so nothing per-batch is recomputed per layer and no layer
needs a host sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flexbert.model.backends import AttentionBackend, Window
from flexbert.model.rotary import apply_rotary, rope_cos_sin


@dataclass
class BatchInfo:
    cu_seqlens: torch.Tensor  # (n+1,) int32 document boundaries
    max_seqlen: int  # longest document (Python int: kernels need it on the host)
    total: int  # T, number of (unpadded) tokens
    seq_ids: torch.Tensor  # (T,) long, document index of each token
    positions: torch.Tensor  # (T,) long, position inside its document
    static: bool = False  # fixed shapes (flexbert/model/static.py): layouts must not follow the documents
    causal: bool = False  # keys j <= i only (CLM); windows keep their left side (flexbert/model/backends.py)
    backend: AttentionBackend | None = None
    attn: Any = None  # what backend.prepare built
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def batch_info(cu_seqlens: torch.Tensor, max_seqlen: int, total: int, static: bool = False,
               causal: bool = False) -> BatchInfo:
    """Document ids and per-document positions from ``cu_seqlens``, without a host sync."""
    cu = cu_seqlens.to(torch.int32)
    lens = (cu[1:] - cu[:-1]).long()
    n = lens.numel()
    seq_ids = torch.repeat_interleave(torch.arange(n, device=cu.device), lens, output_size=total)
    positions = torch.arange(total, device=cu.device) - cu.long()[seq_ids]
    return BatchInfo(cu, int(max_seqlen), int(total), seq_ids, positions, static, causal)


def layer_window(config, layer_id: int) -> Window:
    """None for global layers; ``(w//2, w//2)`` for local ones (sees |q - k| <= w // 2)."""
    if config.layer_is_global(layer_id):
        return None
    half = config.local_attention // 2
    return (half, half)


def rope_tables(config, positions: torch.Tensor, layers_global: list[bool]) -> dict:
    """cos/sin per rope kind in use, read from the config *now* (never cached at init)."""
    tables = {}
    if not config.rotary:
        return tables
    if any(layers_global):
        tables["global"] = rope_cos_sin(positions, config.head_dim, config.global_rope_theta)
    if not all(layers_global):
        tables["local"] = rope_cos_sin(positions, config.head_dim, config.local_rope_theta)
    return tables


class FlexBertAttention(nn.Module):
    """Wqkv -> RoPE -> backend (document- and window-aware) -> Wo -> dropout."""

    def __init__(self, config, layer_id: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.rotary = config.rotary
        self.window = layer_window(config, layer_id)
        self.rope_kind = "global" if self.window is None else "local"
        self.attention_dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attn_qkv_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attn_out_bias)
        self.out_drop = nn.Dropout(config.attn_out_dropout)

    def forward(self, x: torch.Tensor, batch: BatchInfo) -> torch.Tensor:
        T = x.shape[0]
        # Wqkv rows are [Q | K | V], each (heads, head_dim): transformers' layout.
        q, k, v = self.Wqkv(x).view(T, 3, self.num_heads, self.head_dim).unbind(1)
        if self.rotary:
            cos, sin = batch.rope[self.rope_kind]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        p = self.attention_dropout if self.training else 0.0
        out = batch.backend(q, k, v, batch, self.window, p, self.scale)
        return self.out_drop(self.Wo(out.reshape(T, -1)))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window}, rotary={self.rotary}"
