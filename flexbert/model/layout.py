"""The two input forms of the model and how they map onto the unpadded token stream.

* packed: ``input_ids (T,)``, ``cu_seqlens (n+1,)``, ``max_seqlen`` (int) -- the data loader's rows;
* padded: ``input_ids (B, S)``, ``attention_mask (B, S)`` -- HF style; unpadded once at the
  entrance (``make_layout``), outputs re-padded once at the exit (``Layout.repad``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class Layout:
    """How the caller's input maps onto the unpadded token stream."""

    input_ids: torch.Tensor  # (T,)
    cu_seqlens: torch.Tensor  # (n+1,) int32
    max_seqlen: int
    indices: Optional[torch.Tensor] = None  # padded input: flat (B*S) index of each token
    shape: Optional[tuple[int, int]] = None  # padded input: (B, S)

    def flatten(self, x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Bring a per-token tensor given in the caller's layout (e.g. labels) to (T, ...)."""
        if x is None or self.indices is None:
            return x
        return x.reshape(-1, *x.shape[2:])[self.indices]

    def repad(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """(T, ...) -> the caller's layout: unchanged if packed, (B, S, ...) if padded."""
        if self.indices is None:
            return x
        B, S = self.shape
        out = x.new_full((B * S, *x.shape[1:]), fill)
        out[self.indices] = x
        return out.view(B, S, *x.shape[1:])


def make_layout(
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    max_seqlen: Optional[int] = None,
) -> Layout:
    if input_ids.dim() == 1:  # packed
        T = input_ids.shape[0]
        if cu_seqlens is None:  # a single document
            cu_seqlens = torch.tensor([0, T], dtype=torch.int32, device=input_ids.device)
            max_seqlen = T
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())  # host sync; pass it instead
        return Layout(input_ids, cu_seqlens.to(torch.int32), int(max_seqlen))
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (T,) packed or (B, S) padded, got shape {tuple(input_ids.shape)}")
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens is for packed (1-D) input_ids; for (B, S) pass attention_mask")
    B, S = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = attention_mask.reshape(-1).bool()
    lens = attention_mask.bool().sum(1, dtype=torch.int32)
    indices = torch.nonzero(mask).flatten()  # the one host sync of the padded path
    cu = F.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))
    return Layout(input_ids.reshape(-1)[indices], cu, int(lens.max()) if B else 0, indices, (B, S))
