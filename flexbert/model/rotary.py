"""Rotary position embeddings (non-interleaved "rotate_half", GPT-NeoX / ModernBERT style).

cos/sin are computed per batch from the per-document positions and the theta read from the config
*at forward time*; nothing is cached at init.  (The reference implementation cached frequencies at
init, so changing the theta for context extension silently did nothing.)  Everything is in fp32 and
the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim) in fp32 for integer ``positions`` (T,)."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (float(theta) ** exponent)
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (T, heads, head_dim) by per-token angles; cos/sin are (T, head_dim) fp32."""
    xf = x.float()
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
