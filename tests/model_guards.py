"""Planted defects for model-agreement tests (imported by tests, not collected).

A check "backend X agrees with the reference" is only worth something if it fails when attention
is wrong.  Instead of a fixed tolerance guessed without measuring, these helpers compute the
difference each planted defect makes (a window one token narrower, a merged document boundary, a
wrong global RoPE theta, a skipped layer) and the check asks the real difference to be a small
fraction of the smallest of them: a self-calibrating bound that holds on any device and dtype,
and a check that provably fails on each defect it names.
"""

from __future__ import annotations

import contextlib

import torch

from flexbert.model import FlexBertForMaskedLM
from flexbert.model.config import FlexBertConfig

BASE = dict(vocab_size=1000, hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=2,
            local_attention=64, global_attn_every_n_layers=3, pad_token_id=0, attn_out_dropout=0.0,
            init_std=0.2, attention_backend="sdpa")  # fmt: skip
DEFECTS = ("window-1", "merged-boundary", "theta-x2", "skipped-layer")


def doc_lengths(total: int, seed: int = 0, lo: int = 16, hi: int = 512) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    lens: list[int] = []
    while sum(lens) < total:
        lens.append(int(torch.randn((), generator=g).mul(hi / 8).add(hi / 2).clamp(lo, hi)))
    lens[-1] -= sum(lens) - total
    return [n for n in lens if n > 0]


def make_batch(total: int, device, seed: int = 0):
    lens = doc_lengths(total, seed, hi=min(512, total // 2))
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    ids = torch.randint(5, BASE["vocab_size"], (total,), device=device, generator=torch.Generator(device).manual_seed(seed))
    return ids, cu, max(lens)


def build(device, dtype_unused=None, **overrides) -> FlexBertForMaskedLM:
    torch.manual_seed(0)  # every variant gets the same weights
    return FlexBertForMaskedLM(FlexBertConfig.from_dict({**BASE, **overrides})).to(device).eval()


def logits(model, ids, cu, max_len, dtype) -> torch.Tensor:
    device = ids.device
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with torch.no_grad(), amp:
        return model(ids, cu_seqlens=cu, max_seqlen=max_len).logits.float()


def defect_logits(device, dtype, ids, cu, max_len) -> dict[str, torch.Tensor]:
    """The reference model's logits under each planted defect (sdpa backend, same weights)."""
    out = {"window-1": logits(build(device, local_attention=BASE["local_attention"] - 2), ids, cu, max_len, dtype),
           "theta-x2": logits(build(device, global_rope_theta=2 * FlexBertConfig.from_dict(BASE).global_rope_theta),
                              ids, cu, max_len, dtype)}
    merged = torch.cat([cu[:1], cu[2:]])  # the first two documents as one
    out["merged-boundary"] = logits(build(device), ids, merged, int((merged[1:] - merged[:-1]).max()), dtype)
    skip = build(device)
    skip.model.layers[1].forward = lambda h, batch: h
    out["skipped-layer"] = logits(skip, ids, cu, max_len, dtype)
    return out


def scaled_attention_logits(device, dtype, ids, cu, max_len, factor: float = 1.02) -> torch.Tensor:
    """The reference model's logits with every attention scale off by ``factor`` (a small defect:
    2% moves fp32 logits by ~0.9 on the CPU case, far below the planted defects above)."""
    model = build(device)
    for layer in model.model.layers:
        layer.attn.scale *= factor
    return logits(model, ids, cu, max_len, dtype)


def assert_agrees(got: torch.Tensor, ref: torch.Tensor, defects: dict[str, torch.Tensor], fraction: float = 0.25) -> None:
    """|got - ref| must be under ``fraction`` of the smallest difference a planted defect makes."""
    err = float((got - ref).abs().max())
    planted = {name: float((d - ref).abs().max()) for name, d in defects.items()}
    assert min(planted.values()) > 0, planted
    assert err < fraction * min(planted.values()), f"difference {err:.4g} vs planted defects {planted}"
