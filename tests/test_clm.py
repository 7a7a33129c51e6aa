"""Causal LM (issue 27): causal attention in every backend and layout, next-token labels that stay
inside their document, and the loss paths against cross-entropy written out on shifted targets.

The sdpa layouts run on CPU; flex, varlen and flash_attn are marked ``gpu`` and skip without CUDA
(or without the backend).  Run them on a GPU with ``pytest -m gpu tests/test_clm.py``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flexbert.config import IGNORE_INDEX
from flexbert.data.masking import clm_labels
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.attention import batch_info
from flexbert.model.backends import ATTENTION_BACKENDS, SDPABackend, resolve_backend
from flexbert.model.config import FlexBertConfig
from flexbert.model.loss import token_losses
from flexbert.model.static import pad_cu_seqlens

VOCAB, PAD = 97, 0
GPU_BACKENDS = ("flex", "varlen", "flash_attn")
# how tokens reach the kernel: the three sdpa layouts (CPU), then the GPU kernels
LAYOUTS = ["grid-packed", "grid-one-doc", "blocks", *(pytest.param(b, marks=pytest.mark.gpu) for b in GPU_BACKENDS)]


def device_for(layout: str) -> tuple[str, torch.dtype]:
    if layout not in GPU_BACKENDS:
        return "cpu", torch.float32
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    why = ATTENTION_BACKENDS.get(layout).why_unavailable(torch.device("cuda"), torch.bfloat16)
    if why:
        pytest.skip(why)
    return "cuda", torch.bfloat16


# ------------------------------------------------------------------ the kernels against a dense mask
def dense_attention(q, k, v, cu, window, causal, scale):
    """Attention written out with a dense (T, T) mask: same document, inside the window, and
    ``j <= i`` when causal (a local causal layer: the dense causal mask cut to the window)."""
    cu = cu.long().cpu()
    doc = torch.repeat_interleave(torch.arange(cu.numel() - 1), cu[1:] - cu[:-1]).to(q.device)
    i = torch.arange(q.shape[0], device=q.device)
    rel = i[None, :] - i[:, None]  # key - query
    allowed = doc[:, None] == doc[None, :]
    if window is not None:
        allowed &= (rel >= -window[0]) & (rel <= window[1])
    if causal:
        allowed &= rel <= 0
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    return torch.einsum("hqk,khd->qhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v.float())


def attend(layout, q, k, v, cu, window, causal):
    """One attention call through ``layout`` (cu: the documents; padded with empty ones for blocks)."""
    static = layout == "blocks"
    max_len = int((cu[1:] - cu[:-1]).max())
    if static:
        cu = pad_cu_seqlens(cu, 20)
    if layout in GPU_BACKENDS:
        backend = resolve_backend(layout, q.device, q.dtype)
    else:
        backend = SDPABackend(pack_rows=layout == "grid-packed")
    info = batch_info(cu, max_len, q.shape[0], static=static, causal=causal)
    info.attn = backend.prepare(info, [window])
    if layout.startswith("grid"):
        assert info.attn["rows"] == (2 if layout == "grid-packed" else 6)  # the layout under test
    return backend(q, k, v, info, window, 0.0, q.shape[-1] ** -0.5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("window", [None, (4, 4), (1, 3), (40, 40)], ids=["global", "band4", "band1-3", "wide"])
@pytest.mark.parametrize("causal", [True, False], ids=["clm", "mlm"])
def test_kernel_equals_dense_mask(layout, window, causal):
    """Output and gradients equal the dense-mask definition: under CLM a global layer sees
    ``j <= i`` of its document and a band layer ``i - left <= j <= i``; MLM as before."""
    device, dtype = device_for(layout)
    torch.manual_seed(0)
    cu = torch.tensor([0, 13, 14, 40, 47, 50, 52], dtype=torch.int32, device=device)
    q, k, v = (torch.randn(52, 3, 8, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    got = attend(layout, q, k, v, cu, window, causal).float()
    ref = dense_attention(q, k, v, cu, window, causal, 8**-0.5)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got, ref, **tol)
    for g, r in zip(torch.autograd.grad(got.square().sum(), (q, k, v)), torch.autograd.grad(ref.square().sum(), (q, k, v))):
        torch.testing.assert_close(g.float(), r.float(), atol=1e-4 if dtype == torch.float32 else 5e-2, rtol=5e-2)


# ------------------------------------------------------------------ the model: token j moves nothing before it
def small_config(**overrides) -> FlexBertConfig:
    data = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        local_attention=8, global_attn_every_n_layers=3, pad_token_id=PAD, attn_out_dropout=0.0,
        attention_backend="sdpa", init_std=0.2, mlm_loss="chunked",
    )  # fmt: skip
    data.update(overrides)
    return FlexBertConfig.from_dict(data)


def make_model(device="cpu", **overrides) -> FlexBertForMaskedLM:
    torch.manual_seed(0)
    return FlexBertForMaskedLM(small_config(**overrides)).to(device).eval()


def packed_row(lens, pad_tail=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.randint(4, VOCAB, (sum(lens),), generator=g), torch.full((pad_tail,), PAD)])
    seg = list(lens) + ([pad_tail] if pad_tail else [])
    cu = torch.tensor([0, *np.cumsum(seg)], dtype=torch.int32)
    return ids, cu, max(seg)


def logits_of(layout, model, ids, cu, max_len, causal, dtype):
    amp = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    kw = dict(cu_seqlens=cu, max_seqlen=max_len)
    if layout == "blocks":
        kw = dict(cu_seqlens=pad_cu_seqlens(cu, 16), max_seqlen=40, static=True)
    with torch.no_grad(), amp:
        return model(ids, causal=causal, **kw).logits.float()


def model_for(layout, device):
    if layout in GPU_BACKENDS:
        return make_model(device, attention_backend=layout)
    model = make_model()
    if layout == "grid-one-doc":  # the layout a GPU batch gets, here on CPU
        model.model._backends[("cpu", torch.float32, False)] = SDPABackend(pack_rows=False)
    return model


@pytest.mark.parametrize("layout", LAYOUTS)
def test_changing_token_j_moves_no_earlier_position_nor_another_document(layout):
    device, dtype = device_for(layout)
    model = model_for(layout, device)
    lens = [37, 5, 20, 1, 16]  # longer and shorter than the window (8), a single-token document
    ids, cu, max_len = (t.to(device) if torch.is_tensor(t) else t for t in packed_row(lens, pad_tail=11))
    for j in (20, 52):  # inside the first document; the 11th token of the third
        changed = ids.clone()
        changed[j] = 4 + (int(ids[j]) - 3) % (VOCAB - 4)
        diff = {}
        for causal in (True, False):
            before, after = (logits_of(layout, model, x, cu, max_len, causal, dtype) for x in (ids, changed))
            diff[causal] = (after - before).abs().amax(-1)
        d = diff[True]
        start, end = next((s, e) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()) if s <= j < e)
        earlier_or_elsewhere = torch.ones_like(d, dtype=torch.bool)
        earlier_or_elsewhere[j:end] = False
        affected = float(d[j:end].max())
        assert affected > 1e-2, "changing the token changed nothing at all"
        bound = 1e-6 if dtype == torch.float32 else 1e-3 * affected
        assert float(d[earlier_or_elsewhere].max()) <= bound, (layout, j, d[start:j], d[~earlier_or_elsewhere.cpu()])
        assert float(diff[False][start:j].max()) > 1e-3  # guard: without causal, earlier tokens do move


@pytest.mark.parametrize("entrance", ["masked-lm", "encoder"])
def test_padded_entrance_is_causal_per_row(entrance):
    """HF-style (B, S) input with right and left padding, through the MLM model (logits) and the
    bare encoder (hidden states): each row's tokens see only their past."""
    model = make_model()
    forward = (lambda x, m: model(x, attention_mask=m, causal=True).logits) if entrance == "masked-lm" else \
        (lambda x, m: model.model(x, attention_mask=m, causal=True))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, VOCAB, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    changed = ids.clone()
    changed[2, 7] = 4 + (int(ids[2, 7]) - 3) % (VOCAB - 4)  # the 4th real token of row 2
    with torch.no_grad():
        before, after = (forward(x, mask) for x in (ids, changed))
    d = (after - before).abs().amax(-1)
    assert float(d[2, 7:].min()) > 1e-3
    assert float(d[:2].max()) == 0.0 and float(d[2, :7].max()) == 0.0, d


# ------------------------------------------------------------------ labels
def reference_labels(ids, cu, num_tokens):
    """The definition, one token at a time."""
    out = np.full(len(ids), IGNORE_INDEX)
    for s, e in zip(cu[:-1], cu[1:]):
        for t in range(s, e - 1):
            if t + 1 < num_tokens:
                out[t] = ids[t + 1]
    return out


@pytest.mark.parametrize("cu,num_tokens", [
    ([0, 0, 7, 8, 8, 21, 30, 36, 40], None),  # no padding; empty and single-token segments
    ([0, 0, 7, 8, 8, 21, 30, 36, 40], 30),  # a padding tail of two segments
    ([0, 7, 8, 21, 40], 21),  # one padding segment
    ([0, 20, 40], 0),  # a padding-only row
])  # fmt: skip
def test_clm_labels_stay_inside_each_document_and_off_the_padding(cu, num_tokens):
    ids = np.arange(100, 140, dtype=np.int64)
    got = clm_labels(ids, torch.tensor(cu, dtype=torch.int32), num_tokens)
    assert got.dtype == np.int64 and got.shape == ids.shape
    np.testing.assert_array_equal(got, reference_labels(ids, cu, len(ids) if num_tokens is None else num_tokens))
    np.testing.assert_array_equal(ids, np.arange(100, 140))  # inputs untouched


# ------------------------------------------------------------------ the loss against F.cross_entropy
def shifted_reference_loss(logits, ids, cu, num_real_docs):
    """CLM written out: in each document, logits[t] against ids[t + 1]."""
    bounds = list(zip(cu[:-1].tolist(), cu[1:].tolist()))[:num_real_docs]
    pred = torch.cat([logits[s : e - 1] for s, e in bounds])
    target = torch.cat([ids[s + 1 : e] for s, e in bounds])
    return F.cross_entropy(pred.float(), target), pred, target


@pytest.mark.parametrize("path", ["logits", "lean-chunked", "lean-plain", "sparse-logits", "sparse-chunked"])
def test_clm_loss_equals_cross_entropy_on_shifted_targets(path):
    lens = [30, 9, 1, 21]
    ids, cu, max_len = packed_row(lens, pad_tail=7, seed=2)
    labels = torch.from_numpy(clm_labels(ids.numpy(), cu, sum(lens)))
    overrides = dict(sparse_prediction=path.startswith("sparse"), decoder_bias=True,
                     mlm_loss="plain" if path.endswith("plain") else "chunked")
    model = make_model(**overrides).train()
    with torch.no_grad():
        model.decoder.bias.normal_(0, 1.0)
    out = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, causal=True,
                return_logits=path in ("logits", "sparse-logits"))
    out.loss.backward()
    ref_model = make_model(**overrides).train()
    ref_model.load_state_dict(model.state_dict())
    logits = ref_model(ids, cu_seqlens=cu, max_seqlen=max_len, causal=True).logits
    ref, _, target = shifted_reference_loss(logits, ids, cu, len(lens))
    ref.backward()
    assert target.numel() == sum(lens) - len(lens) == int((labels != IGNORE_INDEX).sum())
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)
    ref_grads = dict(ref_model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_per_token_losses_on_clm_labels_equal_cross_entropy_per_token():
    """The by-length evaluation's entry (``model.token_losses``, causal) and the primitive under it."""
    lens = [25, 14, 3]
    ids, cu, max_len = packed_row(lens, pad_tail=6, seed=5)
    labels = torch.from_numpy(clm_labels(ids.numpy(), cu, sum(lens)))
    model = make_model(decoder_bias=True)
    with torch.no_grad():
        loss, hit, pos = model.token_losses(ids, labels, cu, max_len, causal=True)
        logits = model(ids, cu_seqlens=cu, max_seqlen=max_len, causal=True).logits
        _, pred, target = shifted_reference_loss(logits, ids, cu, len(lens))
        h = model.head(model.model(ids, cu_seqlens=cu, max_seqlen=max_len, causal=True)[pos])
        chunked = token_losses(h, model.decoder.weight, model.decoder.bias, labels[pos], chunk=8)
    expect = F.cross_entropy(pred.float(), target, reduction="none")
    assert torch.equal(labels[pos], target)
    for got_loss, got_hit in ((loss, hit), chunked):
        torch.testing.assert_close(got_loss, expect, atol=1e-5, rtol=1e-5)
        assert torch.equal(got_hit, pred.argmax(-1) == target)


def test_clm_training_forward_is_one_graph_and_equals_eager():
    """``causal`` is a Python bool read once per forward: the static CLM training forward compiles
    with ``fullgraph=True`` (a host sync or graph break would raise) and equals eager."""
    torch._dynamo.reset()
    ids, cu, _ = packed_row([30, 9, 1, 21], pad_tail=7, seed=3)
    labels = torch.from_numpy(clm_labels(ids.numpy(), cu, 61))
    kw = dict(cu_seqlens=pad_cu_seqlens(cu, 16), max_seqlen=40, static=True, labels=labels, return_logits=False,
              max_predictions=ids.numel(), causal=True)  # fmt: skip
    results = []
    for compiled in (False, True):
        model = make_model(sparse_prediction=True, num_hidden_layers=2, global_attn_every_n_layers=2).train()
        if compiled:  # layer 0 global, layer 1 local: both kinds
            model.model.bind_backends("cpu", torch.float32)
            model.compile(fullgraph=True, dynamic=False, backend="aot_eager")
        out = model(ids, **kw)
        out.loss.backward()
        results.append((out.loss.detach(), int(out.stats.count), {n: p.grad for n, p in model.named_parameters()}))
    (loss_e, n_e, g_e), (loss_c, n_c, g_c) = results
    torch.testing.assert_close(loss_c, loss_e, atol=1e-5, rtol=1e-5)
    assert n_c == n_e == sum([30, 9, 1, 21]) - 4
    for name, g in g_e.items():
        torch.testing.assert_close(g_c[name], g, atol=1e-5, rtol=1e-4, msg=name)
