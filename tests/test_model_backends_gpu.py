"""GPU attention backends (flex, varlen, flash_attn) agree with the sdpa reference.

Marked ``gpu``: each test skips cleanly without CUDA or without the backend (e.g. flash-attn not
installed).  Run them whenever a GPU is available: ``pytest -m gpu tests``.
"""

from __future__ import annotations

import pytest
import torch

from flexbert.model.config import FlexBertConfig
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.attention import batch_info
from flexbert.model.backends import ATTENTION_BACKENDS, SDPABackend, resolve_backend

pytestmark = pytest.mark.gpu
GPU_BACKENDS = ["flex", "varlen", "flash_attn"]


def need(backend: str, dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    why = ATTENTION_BACKENDS.get(backend).why_unavailable(torch.device("cuda"), dtype)
    if why:
        pytest.skip(why)


def doc_lengths(total: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    lens = []
    while sum(lens) < total:
        lens.append(int(torch.randn((), generator=g).mul(64).add(256).clamp(16, 512)))
    lens[-1] -= sum(lens) - total
    return [n for n in lens if n > 0]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("window", [None, (64, 64)], ids=["global", "local"])
def test_kernel_matches_sdpa(backend, window):
    dtype = torch.bfloat16
    need(backend, dtype)
    torch.manual_seed(0)
    lens = doc_lengths(4096)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    T, H, D = 4096, 6, 64
    q, k, v = (torch.randn(T, H, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    grads = {}
    outs = {}
    for name in ("sdpa", backend):
        impl = SDPABackend() if name == "sdpa" else resolve_backend(name, torch.device("cuda"), dtype)
        info = batch_info(cu, max(lens), T)
        info.attn = impl.prepare(info, [window])
        out = impl(q, k, v, info, window, 0.0, D**-0.5)
        outs[name] = out.float()
        grads[name] = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    torch.testing.assert_close(outs[backend], outs["sdpa"], atol=2e-2, rtol=2e-2)
    for a, b in zip(grads[backend], grads["sdpa"]):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_model_with_backend_matches_sdpa(backend):
    need(backend, torch.bfloat16)
    cfg = dict(vocab_size=1000, hidden_size=256, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
               local_attention=128, pad_token_id=0, attn_out_dropout=0.0, init_std=0.05)  # fmt: skip
    torch.manual_seed(0)
    ref_model = FlexBertForMaskedLM(FlexBertConfig.from_dict(dict(cfg, attention_backend="sdpa"))).cuda().train()
    model = FlexBertForMaskedLM(FlexBertConfig.from_dict(dict(cfg, attention_backend=backend))).cuda().train()
    model.load_state_dict(ref_model.state_dict())
    lens = doc_lengths(8192, seed=1)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    ids = torch.randint(5, 1000, (8192,), device="cuda")
    labels = torch.where(torch.rand(8192, device="cuda") < 0.3, ids, -100)
    results = []
    for m in (ref_model, model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(ids, cu_seqlens=cu, max_seqlen=max(lens), labels=labels)
        out.loss.backward()
        results.append((out.loss.detach(), out.logits.detach().float(), m.model.layers[1].attn.Wqkv.weight.grad))
    (l0, z0, g0), (l1, z1, g1) = results
    assert abs(l0.item() - l1.item()) < 2e-2
    assert (z0 - z1).abs().max() < 0.1
    assert torch.nn.functional.cosine_similarity(g0.flatten(), g1.flatten(), dim=0) > 0.99


def test_auto_picks_a_gpu_kernel():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    picked = resolve_backend("auto", torch.device("cuda"), torch.bfloat16).name
    assert picked != "sdpa" or all(
        ATTENTION_BACKENDS.get(b).why_unavailable(torch.device("cuda"), torch.bfloat16) for b in GPU_BACKENDS
    )


@pytest.mark.parametrize("mode", ["blocks", "model"])
def test_compiled_matches_eager(mode):
    """``compile_model`` compiles in place: same parameter names, same outputs (static shapes)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from flexbert.model.compile import compile_model
    from flexbert.model.static import pad_cu_seqlens

    cfg = FlexBertConfig.from_dict(dict(vocab_size=1000, hidden_size=128, intermediate_size=192, num_hidden_layers=3,
                                        num_attention_heads=2, local_attention=64, pad_token_id=0, attn_out_dropout=0.0,
                                        attention_backend="auto"))  # fmt: skip
    torch.manual_seed(0)
    eager = FlexBertForMaskedLM(cfg).cuda().eval()
    compiled = FlexBertForMaskedLM(cfg).cuda().eval()
    compiled.load_state_dict(eager.state_dict())
    compile_model(compiled, mode)
    assert set(compiled.state_dict()) == set(eager.state_dict())  # names unchanged by compilation
    for seed in range(3):
        lens = doc_lengths(2048, seed=seed)
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
        ids = torch.randint(5, 1000, (2048,), device="cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            a = eager(ids, cu_seqlens=cu, max_seqlen=max(lens)).logits.float()
            b = compiled(ids, cu_seqlens=pad_cu_seqlens(cu, 64), max_seqlen=512, static=True).logits.float()
        assert (a - b).abs().max() < 0.05
