"""The memory-lean MLM loss (flexbert/model/loss.py): same numbers as the plain path, a fraction
of its memory, counts for the metrics, and the model's two ways out (logits or lean stats)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import flexbert.config
from flexbert.config import ConfigError
from flexbert.model.config import FlexBertConfig
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.loss import chunked_loss, liger_available, logits_loss, mlm_loss, plain_loss, token_losses

IGNORE = -100


def head_inputs(n: int, hidden: int, vocab: int, bias: bool, seed: int = 0, masked: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.3).requires_grad_()
    b = (torch.randn(vocab, generator=g) * 0.5).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[torch.rand(n, generator=g) > masked] = IGNORE
    return h, w, b, labels


def grads(stats, *tensors):
    stats.loss.backward()
    out = [None if t is None else t.grad.clone() for t in tensors]
    for t in tensors:
        if t is not None:
            t.grad = None
    return out


@pytest.mark.parametrize("n,hidden,vocab,chunk", [(1, 8, 11, 64), (37, 16, 50, 8), (130, 24, 301, 64), (64, 8, 13, 64)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_chunked_equals_plain_loss_and_gradients(n, hidden, vocab, chunk, bias):
    h, w, b, labels = head_inputs(n, hidden, vocab, bias, seed=n)
    if n == 1:
        labels[0] = 3  # a single labelled token
    ref = plain_loss(h, w, b, labels)
    ref_grads = grads(ref, h, w, b)
    got = chunked_loss(h, w, b, labels, chunk=chunk)
    got_grads = grads(got, h, w, b)
    assert int(got.count) == int((labels != IGNORE).sum()) == int(ref.count)
    assert int(got.correct) == int(ref.correct)
    torch.testing.assert_close(got.loss_sum, ref.loss_sum, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, F.cross_entropy(h @ w.T + (0 if b is None else b), labels, ignore_index=IGNORE))
    for a, r in zip(got_grads, ref_grads):
        if r is not None:
            torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5)


def test_no_labelled_token_gives_zero_loss_and_zero_gradients():
    h, w, b, labels = head_inputs(20, 8, 30, True)
    labels[:] = IGNORE
    stats = chunked_loss(h, w, b, labels, chunk=8)
    gh, gw, gb = grads(stats, h, w, b)
    assert float(stats.loss) == 0.0 and int(stats.count) == 0 and int(stats.correct) == 0
    assert not gh.any() and not gw.any() and not gb.any()


def test_accuracy_counts_match_argmax():
    h, w, b, labels = head_inputs(200, 16, 40, True, masked=1.0)
    labels[::3] = (h @ w.T + b).argmax(-1)[::3].detach()  # a third are right by construction
    stats = mlm_loss("chunked", h, w, b, labels)
    expect = int(((h @ w.T + b).argmax(-1) == labels).sum())
    assert int(stats.correct) == expect >= 67 and int(stats.count) == 200


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_per_token_losses_sum_to_the_chunked_loss(bias):
    """The per-token primitive (the by-length evaluation's): each labelled row's cross-entropy and
    argmax hit, 0 / False on ignored rows; sums equal chunked's, chunk size does not matter."""
    h, w, b, labels = head_inputs(130, 16, 301, bias, seed=7)
    ref = chunked_loss(h, w, b, labels, chunk=64)
    keep = labels != IGNORE
    logits = (h @ w.T + (0 if b is None else b)).detach()
    for chunk in (8, 64, 1000):
        loss, hit = token_losses(h.detach(), w.detach(), None if b is None else b.detach(), labels, chunk=chunk)
        torch.testing.assert_close(loss[keep], F.cross_entropy(logits[keep], labels[keep], reduction="none"))
        assert not loss[~keep].any() and not hit[~keep].any()
        assert torch.equal(hit[keep], logits[keep].argmax(-1) == labels[keep])
        torch.testing.assert_close(loss.sum(), ref.loss_sum.detach(), atol=1e-4, rtol=1e-5)
        assert int(hit.sum()) == int(ref.correct)
    empty = token_losses(h[:0], w, b, labels[:0])
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


def test_every_loss_path_follows_the_one_ignore_index(monkeypatch):
    """issue 25: one ignore index.  Planted in flexbert.config (-1 instead of -100), the plain,
    chunked, per-token and logits paths and the model's padded (HF), sparse, lean and per-token
    paths all skip exactly the positions labelled -1, against cross-entropy written out on the kept ones."""
    monkeypatch.setattr(flexbert.config, "IGNORE_INDEX", -1)
    h, w, b, labels = head_inputs(50, 8, 30, True, seed=3)
    labels[labels == IGNORE] = -1
    keep = labels != -1
    logits = h @ w.T + b
    expect = F.cross_entropy(logits[keep], labels[keep])
    for name, stats in {"plain": plain_loss(h, w, b, labels), "chunked": chunked_loss(h, w, b, labels, chunk=8),
                        "logits": logits_loss(logits, labels)}.items():  # fmt: skip
        torch.testing.assert_close(stats.loss, expect, msg=name)
        assert int(stats.count) == int(keep.sum()), name
    per_token = token_losses(h.detach(), w.detach(), b.detach(), labels)[0]
    torch.testing.assert_close(per_token.sum() / keep.sum(), expect.detach())
    _model_paths_follow_the_planted_ignore_index()


def _model_paths_follow_the_planted_ignore_index():
    ids, cu, max_len, labels = packed([30, 9, 21], seed=6)
    labels[labels == IGNORE] = -1
    keep = labels != -1
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(small_config(sparse_prediction=True)).train()
    full = model(ids, cu_seqlens=cu, max_seqlen=max_len).logits
    expect = F.cross_entropy(full[keep], labels[keep])
    rows, mask = torch.zeros(3, max_len, dtype=torch.long), torch.zeros(3, max_len, dtype=torch.long)
    row_labels = torch.full((3, max_len), -1)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):  # one document per row, HF style
        rows[i, : e - s], mask[i, : e - s], row_labels[i, : e - s] = ids[s:e], 1, labels[s:e]
    padded = model.eval()(rows, attention_mask=mask, labels=row_labels).loss  # eval: the full-logits path
    per_token, _, pos = model.token_losses(ids, labels, cu, max_len)  # the by-length evaluation's entry
    assert torch.equal(pos, keep.nonzero().flatten())
    torch.testing.assert_close(per_token.mean(), expect, atol=1e-6, rtol=1e-6)
    model.train()
    sparse = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels)  # gathers the labelled rows
    lean = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, return_logits=False, max_predictions=40)
    for name, loss in {"padded": padded, "sparse": sparse.loss, "lean": lean.loss}.items():
        torch.testing.assert_close(loss, expect, atol=1e-6, rtol=1e-6, msg=name)
    assert sparse.labels.shape == (int(keep.sum()),)


def _peak_bytes(fn) -> int:
    """Peak of CPU memory allocated inside ``fn``, from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def test_chunked_head_peak_memory_is_under_a_quarter_of_plain():
    """4,096 predicted tokens x 50,368 vocabulary, forward + backward of decoder + loss."""
    h, w, b, labels = head_inputs(4096, 64, 50368, True, masked=1.0)

    def run(impl):
        return lambda: impl(h, w, b, labels).loss.backward()

    plain = _peak_bytes(run(plain_loss))
    chunked = _peak_bytes(run(chunked_loss))
    logits_fp32 = 4096 * 50368 * 4
    assert plain >= 2 * logits_fp32  # the plain path holds several (tokens x vocab) fp32 tensors
    assert chunked <= plain / 4, (chunked / 2**20, plain / 2**20)


# ------------------------------------------------------------------ the model's lean path
def small_config(**overrides) -> FlexBertConfig:
    data = dict(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        local_attention=8, pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3, attn_out_dropout=0.0,
        attention_backend="sdpa", init_std=0.2, mlm_loss="chunked",
    )  # fmt: skip
    data.update(overrides)
    return FlexBertConfig.from_dict(data)


def packed(lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 97, (sum(lens),), generator=g)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, IGNORE))
    return ids, cu, max(lens), labels


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_model_lean_loss_equals_logits_loss(sparse, bias):
    ids, cu, max_len, labels = packed([30, 9, 21])
    results = {}
    for lean in (True, False):
        torch.manual_seed(0)
        model = FlexBertForMaskedLM(small_config(sparse_prediction=sparse, decoder_bias=bias)).train()
        out = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, return_logits=not lean)
        out.loss.backward()
        results[lean] = (out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (lean, g_lean), (full, g_full) = results[True], results[False]
    assert lean.logits is None and full.logits is not None
    torch.testing.assert_close(lean.loss, full.loss, atol=1e-6, rtol=1e-6)
    keep = full.labels != IGNORE
    assert int(lean.stats.count) == int(keep.sum())
    assert int(lean.stats.correct) == int((full.logits.argmax(-1) == full.labels)[keep].sum())
    for name, g in g_full.items():
        torch.testing.assert_close(g_lean[name], g, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("choice", ["auto", "chunked", pytest.param("liger", marks=pytest.mark.gpu), "plain"])
def test_every_mlm_loss_choice_trains_the_model(choice):
    """Each ``model.mlm_loss`` through the model (on CUDA when there is one, liger included) against
    the loss written out here: decoder(head(h)), fp32 mean cross-entropy over the labelled tokens;
    loss and every gradient."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "liger" and (device != "cuda" or not liger_available()):
        pytest.skip("liger runs on CUDA with liger-kernel installed; neither is here")
    ids, cu, max_len, labels = (t.to(device) if torch.is_tensor(t) else t for t in packed([25, 14], seed=4))
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(small_config(mlm_loss=choice, decoder_bias=True)).to(device).train()
    with torch.no_grad():
        model.decoder.bias.normal_(0, 1.0)  # a bias the loss must not drop
    out = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, return_logits=False)
    out.loss.backward()
    ref = FlexBertForMaskedLM(small_config(mlm_loss="plain", decoder_bias=True)).to(device).train()
    ref.load_state_dict(model.state_dict())
    h = ref.model(ids, cu_seqlens=cu, max_seqlen=max_len)
    logits = torch.nn.functional.linear(ref.head(h), ref.decoder.weight, ref.decoder.bias).float()
    keep = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    loss.backward()
    torch.testing.assert_close(out.loss.float(), loss, atol=1e-5, rtol=1e-5)
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    wrong = torch.nn.functional.cross_entropy(logits[keep] - ref.decoder.bias.float(), labels[keep])
    assert abs(float(wrong) - float(loss)) > 1e-3  # guard: a loss without the bias would be caught


def test_fixed_prediction_capacity_changes_nothing():
    ids, cu, max_len, labels = packed([40, 24], seed=3)
    n = int((labels != IGNORE).sum())
    model = FlexBertForMaskedLM(small_config(sparse_prediction=True)).eval()
    with torch.no_grad():
        exact = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, return_logits=False)
        padded = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels, return_logits=False, max_predictions=n + 13)
    torch.testing.assert_close(padded.loss, exact.loss)
    assert int(padded.stats.count) == int(exact.stats.count) == n
    assert int(padded.stats.correct) == int(exact.stats.correct)


def test_mlm_loss_choice_is_checked_with_the_valid_choices():
    expect = r"model\.mlm_loss: unknown mlm loss 'chunky'.*valid choices: auto, chunked, liger, plain"
    with pytest.raises(ConfigError, match=expect):
        small_config(mlm_loss="chunky")


@pytest.mark.skipif(liger_available(), reason="liger-kernel is installed here")
def test_liger_asked_for_but_absent_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"model\.mlm_loss: liger needs liger-kernel.*flexbert\[liger\]"):
        FlexBertForMaskedLM(small_config(mlm_loss="liger"))


@pytest.mark.gpu
def test_liger_equals_plain_on_gpu():
    if not torch.cuda.is_available() or not liger_available():
        pytest.skip("needs CUDA and liger-kernel")
    h, w, b, labels = (None if t is None else t.detach().cuda() for t in head_inputs(3000, 256, 50368, True))
    h.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    results = {}
    for name in ("plain", "liger"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            stats = mlm_loss(name, h, w, b, labels)
        results[name] = (stats, grads(stats, h, w, b))
    (ref, ref_g), (got, got_g) = results["plain"], results["liger"]
    assert int(got.count) == int(ref.count)
    assert abs(int(got.correct) - int(ref.correct)) <= 2  # bf16 ties may break differently
    torch.testing.assert_close(got.loss, ref.loss, atol=2e-3, rtol=2e-3)
    for a, r in zip(got_g, ref_g):
        torch.testing.assert_close(a.float(), r.float(), atol=2e-3, rtol=5e-2)
