"""How the ``sdpa`` backend regroups unpadded tokens so that torch SDPA costs what the documents cost.

Three layouts, built once per batch (``SDPABackend.prepare``) and shared by every layer:

* ``grid_layout(pack_rows=False)`` -- one document per grid row of ``max_seqlen`` slots: no host
  sync, but a shape that follows the number of documents;
* ``grid_layout(pack_rows=True)`` -- documents packed first-fit-decreasing into grid rows (reads
  ``cu_seqlens`` on the host: free on CPU), a document mask inside each row;
* ``block_layout`` -- static shapes for compiled models: the packed row is cut into query blocks of
  ``max_seqlen`` tokens; each block attends to the keys that a document (at most ``max_seqlen``
  long) or a window can reach from it, with a same-document mask.  Shapes depend only on the row
  size, never on the documents, so zero-length padding documents cost nothing and nothing needs
  the host.  The cost is ``T x (B + left + right)`` scores: ~3x the densest grid for global
  layers, ~1.1x for ModernBERT's 128-token local ones.  Causal batches (``batch.causal``) take
  only the keys left of a block: ``T x (B + left)``.

Each layout reads the layer's ``reach`` (its window cut to the left side when causal) once per
batch; the masks are keyed by the layer's window, so layers find theirs whatever the objective.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

Window = Optional[tuple[int, int]]


def first_fit_rows(lens: list[int], L: int) -> tuple[list[int], int]:
    """Start slot of each document when documents are packed first-fit-decreasing into grid rows
    of ``L`` slots (``L`` >= every length); returns (starts, number of rows)."""
    free: list[int] = []  # free slots left in each grid row
    starts = [0] * len(lens)
    for d in sorted(range(len(lens)), key=lambda i: -lens[i]):
        r = next((i for i, f in enumerate(free) if f >= lens[d]), len(free))
        if r == len(free):
            free.append(L)
        starts[d] = r * L + (L - free[r])
        free[r] -= lens[d]
    return starts, len(free)


def reach(window: Window, causal: bool) -> tuple[Optional[int], Optional[int]]:
    """How far left and right of query ``i`` a key of its document may lie (None: no limit).
    ``causal`` zeroes the right side: a global layer sees ``j <= i``, a local one
    ``i - left <= j <= i``."""
    left, right = (None, None) if window is None else window
    return left, (0 if causal else right)


def _band(rel: torch.Tensor, window: Window, causal: bool) -> Optional[torch.Tensor]:
    """``rel`` (key - query) within the window's reach; None when nothing limits it."""
    left, right = reach(window, causal)
    band = None if left is None else rel >= -left
    if right is not None:
        band = rel <= right if band is None else band & (rel <= right)
    return band


def grid_layout(batch, windows: list[Window], pack_rows: bool) -> dict:
    cu, L = batch.cu_seqlens, batch.max_seqlen
    n = cu.numel() - 1
    device = cu.device
    rows, starts = n, None
    if pack_rows and device.type == "cpu" and n > 1:
        host_starts, packed_rows = first_fit_rows((cu[1:] - cu[:-1]).tolist(), L)
        if packed_rows < n:
            rows, starts = packed_rows, torch.tensor(host_starts, device=device)
    if starts is None:
        starts = torch.arange(n, device=device) * L
    slot = starts[batch.seq_ids] + batch.positions  # where each token sits in the (rows*L) grid
    j = torch.arange(L, device=device)
    band = {w: _band(j[None, :] - j[:, None], w, batch.causal) for w in set(windows)}
    masks: dict[Window, Optional[torch.Tensor]] = {}
    if rows == n:  # one document per row: key padding is "slot < length"
        lens = (cu[1:] - cu[:-1]).long()
        key_ok = j[None, :] < lens[:, None]  # (n, L)
        key_ok[:, 0] = True  # never a fully masked row, even for an empty segment
        q_pad = ~key_ok[:, :, None]
        for w in set(windows):
            if band[w] is None:  # (n, 1, 1, L) broadcasts over heads and queries
                masks[w] = None if L * n == batch.total else key_ok[:, None, None, :]
            else:
                # Padded query rows would be fully masked far from the real keys (NaN rows,
                # NaN gradients); let them see everything -- their outputs are discarded.
                masks[w] = ((key_ok[:, None, :] & band[w][None]) | q_pad)[:, None]
    else:  # several documents per row: same-document mask
        doc = torch.full((rows * L,), -1, device=device, dtype=torch.long)
        doc[slot] = batch.seq_ids
        doc = doc.view(rows, L)
        real = doc >= 0
        same = (doc[:, :, None] == doc[:, None, :]) & real[:, None, :]  # (rows, L, L)
        for w in set(windows):
            m = same if band[w] is None else same & band[w][None]
            masks[w] = (m | ~real[:, :, None])[:, None]
    return {"kind": "grid", "slot": slot, "rows": rows, "L": L, "masks": masks}


def block_layout(batch, windows: list[Window]) -> dict:
    """Static layout: per window, key indices (nb * K,) and a mask (nb, 1, B, K)."""
    T, L = batch.total, batch.max_seqlen
    B = max(1, min(L, T))
    nb = -(-T // B)
    device = batch.seq_ids.device
    doc = F.pad(batch.seq_ids, (0, nb * B - T), value=-1)  # padded queries: document -1
    q_pos = torch.arange(nb * B, device=device).view(nb, B)
    keys = {}
    for w in set(windows):
        left, right = (L - 1 if s is None else min(s, L - 1) for s in reach(w, batch.causal))
        k_pos = (torch.arange(nb, device=device) * B - left)[:, None] + torch.arange(B + left + right, device=device)
        k_ok = (k_pos >= 0) & (k_pos < T)
        k_idx = k_pos.clamp(0, T - 1)
        same = (doc.view(nb, B)[:, :, None] == doc[k_idx][:, None, :]) & k_ok[:, None, :]
        band = _band(k_pos[:, None, :] - q_pos[:, :, None], w, batch.causal)
        if band is not None:
            same = same & band
        same = same | (doc.view(nb, B) < 0)[:, :, None]  # padded queries see everything; discarded
        keys[w] = (k_idx.reshape(-1), same[:, None])
    return {"kind": "blocks", "B": B, "nb": nb, "keys": keys}


def grid_attention(q, k, v, st: dict, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
    rows, L, slot = st["rows"], st["L"], st["slot"]
    T, H, D = q.shape
    qkv = torch.stack((q, k, v), dim=1)  # (T, 3, H, D)
    grid = qkv.new_zeros(rows * L, 3, H, D).index_copy(0, slot, qkv)
    grid = grid.view(rows, L, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, rows, H, L, D)
    out = F.scaled_dot_product_attention(
        grid[0], grid[1], grid[2], attn_mask=st["masks"][window], dropout_p=dropout_p, scale=scale
    )
    return out.transpose(1, 2).reshape(rows * L, H, D).index_select(0, slot)


def block_attention(q, k, v, st: dict, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
    B, nb = st["B"], st["nb"]
    T, H, D = q.shape
    k_idx, mask = st["keys"][window]
    qb = F.pad(q, (0, 0, 0, 0, 0, nb * B - T)).view(nb, B, H, D).transpose(1, 2)
    kb, vb = (x.index_select(0, k_idx).view(nb, -1, H, D).transpose(1, 2) for x in (k, v))
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.transpose(1, 2).reshape(nb * B, H, D)[:T]
