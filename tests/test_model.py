"""FlexBERT model: unpadded forward, packing semantics, sdpa reference path, registry choices."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from flexbert.model.config import FlexBertConfig
from flexbert.model import FlexBertForMaskedLM, FlexBertForSequenceClassification, FlexBertModel
from flexbert.model import registries as R
from flexbert.model.attention import batch_info
from flexbert.model.backends import BackendUnavailable, SDPABackend, resolve_backend

VOCAB = 97
PAD = 0


def small_config(**overrides) -> FlexBertConfig:
    data = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        local_attention=8, global_attn_every_n_layers=3, pad_token_id=PAD, cls_token_id=1, sep_token_id=2,
        mask_token_id=3, attn_out_dropout=0.0, attention_backend="sdpa",
        init_std=0.2,  # large enough that attention patterns (window, RoPE, documents) move the outputs
        global_rope_theta=1000.0, local_rope_theta=100.0,
    )  # fmt: skip
    data.update(overrides)
    return FlexBertConfig.from_dict(data)


def make_model(cls=FlexBertForMaskedLM, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(small_config(**overrides)).eval()


def packed_row(lens, pad_tail=0, seed=0):
    """A packed row as the data loader builds it: documents, then a padding-tail segment."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(4, VOCAB, (n,), generator=g) for n in lens]
    seg = list(lens) + ([pad_tail] if pad_tail else [])
    ids = torch.cat(docs + ([torch.full((pad_tail,), PAD)] if pad_tail else []))
    cu = torch.tensor([0] + torch.tensor(seg).cumsum(0).tolist(), dtype=torch.int32)
    return docs, ids, cu, max(seg)


# ------------------------------------------------------------------ packing semantics
def test_packed_equals_each_sequence_alone_and_padded_batch():
    model = make_model()
    lens = [37, 5, 20, 1, 16]  # longer and shorter than the window (8), one single-token document
    docs, ids, cu, max_len = packed_row(lens, pad_tail=11)
    with torch.no_grad():
        packed = model(ids, cu_seqlens=cu, max_seqlen=max_len).logits
        assert packed.shape == (ids.numel(), VOCAB)
        S = max(lens)
        padded_ids = torch.full((len(docs), S), PAD)
        mask = torch.zeros(len(docs), S, dtype=torch.long)
        for i, d in enumerate(docs):
            padded_ids[i, : len(d)], mask[i, : len(d)] = d, 1
        padded = model(padded_ids, attention_mask=mask).logits
        assert padded.shape == (len(docs), S, VOCAB)
        for i, d in enumerate(docs):
            alone = model(d[None], attention_mask=torch.ones(1, len(d), dtype=torch.long)).logits[0]
            got = packed[cu[i] : cu[i + 1]]
            torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(padded[i, : len(d)], alone, atol=1e-5, rtol=1e-5)
        assert torch.all(padded[mask == 0] == 0)  # re-padded with zeros, no garbage


def test_changing_one_document_changes_no_other():
    model = make_model()
    docs, ids, cu, max_len = packed_row([30, 12, 25, 9], pad_tail=6)
    ids2 = ids.clone()
    ids2[cu[1] : cu[2]] = torch.randint(4, VOCAB, (12,))  # replace document 1 entirely
    with torch.no_grad():
        a = model(ids, cu_seqlens=cu, max_seqlen=max_len).logits
        b = model(ids2, cu_seqlens=cu, max_seqlen=max_len).logits
    changed = (a - b).abs().amax(-1) > 0
    assert changed[cu[1] : cu[2]].all(), "the edited document must change"
    changed[cu[1] : cu[2]] = False
    assert not changed.any(), "another document's outputs changed: attention leaked across documents"


def test_positions_restart_per_document():
    info = batch_info(torch.tensor([0, 3, 3 + 4, 9], dtype=torch.int32), 4, 9)
    assert info.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert info.seq_ids.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_sparse_prediction_loss_equals_dense_loss_and_grads():
    docs, ids, cu, max_len = packed_row([40, 17, 23], pad_tail=8)
    g = torch.Generator().manual_seed(1)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[-8:] = -100
    outs = {}
    for sparse in (True, False):
        model = make_model(sparse_prediction=sparse).train()  # all dropouts are 0: train is deterministic
        out = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels)
        out.loss.backward()
        outs[sparse] = (out, model.model.layers[1].attn.Wqkv.weight.grad.clone())
    (sp, g_sp), (de, g_de) = outs[True], outs[False]
    keep = labels != -100
    assert sp.logits.shape == (int(keep.sum()), VOCAB) and torch.equal(sp.labels, labels[keep])
    assert de.logits.shape == (ids.numel(), VOCAB) and torch.equal(de.labels, labels)
    torch.testing.assert_close(sp.loss, de.loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sp.logits, de.logits[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_sp, g_de, atol=1e-6, rtol=1e-5)
    # the loss is the mean CE over labelled positions only
    ref = torch.nn.functional.cross_entropy(de.logits[keep], labels[keep])
    torch.testing.assert_close(de.loss, ref)


def test_padded_labels_and_loss():
    model = make_model()
    ids = torch.randint(4, VOCAB, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 10, VOCAB) and out.labels is labels
    ref = torch.nn.functional.cross_entropy(out.logits[mask.bool()], ids[mask.bool()])
    torch.testing.assert_close(out.loss, ref)


# ------------------------------------------------------------------ the sdpa reference path
def naive_attention(q, k, v, cu, window, scale):
    """Dense per-document softmax attention with an explicit |i - j| window: the definition."""
    out = torch.empty_like(q)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e == s:  # a zero-length padding document
            continue
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))  # (H, n, D)
        scores = qs @ ks.transpose(1, 2) * scale
        if window is not None:
            i = torch.arange(e - s)
            rel = i[None, :] - i[:, None]
            scores = scores.masked_fill(~((rel >= -window[0]) & (rel <= window[1])), float("-inf"))
        out[s:e] = (scores.softmax(-1) @ vs).transpose(0, 1)
    return out


@pytest.mark.parametrize("pack_rows", [True, False], ids=["docs-packed-in-grid-rows", "one-doc-per-row"])
@pytest.mark.parametrize("window", [None, (4, 4), (1, 3)])
def test_sdpa_backend_matches_definition(window, pack_rows):
    torch.manual_seed(0)
    cu = torch.tensor([0, 13, 14, 40, 47, 50, 52], dtype=torch.int32)
    T, H, D = 52, 3, 8
    q, k, v = (torch.randn(T, H, D, requires_grad=True) for _ in range(3))
    info = batch_info(cu, 26, T)
    backend = SDPABackend(pack_rows=pack_rows)
    info.attn = backend.prepare(info, [window])
    assert info.attn["rows"] == (2 if pack_rows else 6)  # first-fit decreasing: [26] [13 7 3 2 1]
    got = backend(q, k, v, info, window, 0.0, D**-0.5)
    ref = naive_attention(q, k, v, cu, window, D**-0.5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    (g1,) = torch.autograd.grad(got.square().sum(), k)
    (g2,) = torch.autograd.grad(ref.square().sum(), k)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(g1).all()


def test_sdpa_realistic_row_cost_follows_documents(monkeypatch):
    """An 8192-token row (8 x 1024) of ~N(256, 64) documents: exact per document, and nothing of
    size (T, T): the mask and the SDPA inputs are (n_docs, max_seqlen[, max_seqlen])."""
    g = torch.Generator().manual_seed(0)
    lens, total = [], 0
    while True:
        n = int(torch.randn((), generator=g).mul(64).add(256).clamp(16, 512))
        if total + n > 8192 - 16:
            break
        lens.append(n)
        total += n
    model = make_model(num_hidden_layers=3, local_attention=128, hidden_size=32, num_attention_heads=2).train()
    docs, ids, cu, max_len = packed_row(lens, pad_tail=8192 - total, seed=2)
    T = ids.numel()
    assert T == 8192 and len(lens) >= 24

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.numel(), None if attn_mask is None else attn_mask.numel()))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    out = model.model(ids, cu_seqlens=cu, max_seqlen=max_len)
    out.square().mean().backward()
    assert len(seen) == 3
    for q_numel, mask_numel in seen:
        # (grid rows, heads, max_seqlen, head_dim): documents packed first-fit into rows of max_seqlen
        rows = q_numel // (2 * max_len * 16)
        assert rows * max_len < 1.3 * T
        assert mask_numel is None or mask_numel <= rows * max_len * max_len < T * T // 8
    monkeypatch.undo()
    with torch.no_grad():
        for j in range(0, len(docs), 6):
            d = docs[j]
            alone = model.model(d, cu_seqlens=torch.tensor([0, len(d)], dtype=torch.int32), max_seqlen=len(d))
            torch.testing.assert_close(out[cu[j] : cu[j + 1]].detach(), alone, atol=2e-5, rtol=1e-4)


# ------------------------------------------------------------------ every registry choice
REGISTRY_CASES = [
    ("embedding", R.EMBEDDINGS),
    ("norm", R.NORMS),
    ("activation", R.ACTIVATIONS),
    ("head_activation", R.ACTIVATIONS),
    ("mlp", R.MLPS),
    ("block", R.BLOCKS),
    ("init", R.INITS),
    ("attention_backend", R.ATTENTION_BACKENDS),
]
R.load_all()


@pytest.mark.parametrize(
    "field,choice", [(f, c) for f, reg in REGISTRY_CASES for c in reg.choices], ids=lambda x: str(x)
)
def test_every_registry_choice_builds_and_trains(field, choice):
    if field == "attention_backend":
        why = R.ATTENTION_BACKENDS.get(choice).why_unavailable(torch.device("cpu"), torch.float32)
        if why:
            pytest.skip(why)
    model = make_model(**{field: choice}).train()
    docs, ids, cu, max_len = packed_row([19, 7, 12], pad_tail=5)
    labels = torch.where(torch.arange(ids.numel()) % 3 == 0, ids, torch.full_like(ids, -100))
    out = model(ids, cu_seqlens=cu, max_seqlen=max_len, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if "position_embeddings" not in name:  # positions past the row are never used
            assert p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_all_bias_flags_create_trained_biases():
    flags = dict(attn_qkv_bias=True, attn_out_bias=True, mlp_in_bias=True, mlp_out_bias=True, head_bias=True, norm_bias=True)
    model = make_model(**flags).train()
    names = {n for n, _ in model.named_parameters()}
    for key in ("attn.Wqkv.bias", "attn.Wo.bias", "mlp.Wi.bias", "mlp.Wo.bias", "mlp_norm.bias"):
        assert f"model.layers.1.{key}" in names, key
    assert {"head.dense.bias", "decoder.bias", "model.final_norm.bias"} <= names
    no_bias = make_model(decoder_bias=False)
    assert not any(n.endswith(".bias") for n, _ in no_bias.named_parameters())


DROPOUTS = ("embedding_dropout", "attention_dropout", "attn_out_dropout", "mlp_dropout")


@pytest.mark.parametrize("which", DROPOUTS)
def test_each_dropout_acts_in_training_only(which):
    """Each dropout on its own changes training outputs (and only training outputs); with all four
    at zero, training is deterministic: so each case can only pass through its own dropout."""
    docs, ids, cu, max_len = packed_row([20, 10])

    def outputs(**rates):
        model = make_model(**{**{k: 0.0 for k in DROPOUTS}, **rates})
        with torch.no_grad():
            model.eval()
            e1, e2 = (model.model(ids, cu_seqlens=cu, max_seqlen=max_len) for _ in range(2))
            model.train()
            t1, t2 = (model.model(ids, cu_seqlens=cu, max_seqlen=max_len) for _ in range(2))
        return e1, e2, t1, t2

    e1, e2, t1, t2 = outputs(**{which: 0.3})
    assert torch.equal(e1, e2) and not torch.allclose(t1, t2), which
    _, _, n1, n2 = outputs()
    assert torch.equal(n1, n2)  # no dropout anywhere: training is deterministic


def test_layer0_has_no_attn_norm_and_state_dict_names():
    model = make_model()
    keys = set(model.state_dict())
    assert "model.layers.0.attn_norm.weight" not in keys and "model.layers.1.attn_norm.weight" in keys
    assert model.model.layers[0].attn_norm is None
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight  # tied
    untied = make_model(tie_word_embeddings=False)
    assert untied.decoder.weight is not untied.model.embeddings.tok_embeddings.weight


def test_layer_pattern_and_windows():
    model = make_model(num_hidden_layers=7, global_attn_every_n_layers=3, local_attention=16)
    windows = [layer.attn.window for layer in model.model.layers]
    assert windows == [None, (8, 8), (8, 8), None, (8, 8), (8, 8), None]
    all_global = make_model(local_attention=-1)
    assert all(layer.attn.window is None for layer in all_global.model.layers)


# ------------------------------------------------------------------ RoPE
def test_rope_theta_is_read_at_forward_time():
    """Changing the theta after construction (context extension) must change the outputs."""
    model = make_model()
    docs, ids, cu, max_len = packed_row([40, 30])
    run = lambda: model.model(ids, cu_seqlens=cu, max_seqlen=max_len)  # noqa: E731
    with torch.no_grad():
        base = run()
        model.config.global_rope_theta = 160000.0
        changed_global = run()
        model.config.global_rope_theta = 1000.0
        model.config.local_rope_theta = 10000.0
        changed_local = run()
        model.config.local_rope_theta = 100.0
        again = run()
    assert (base - changed_global).abs().max() > 1e-3
    assert (base - changed_local).abs().max() > 1e-3
    torch.testing.assert_close(base, again, atol=0, rtol=0)
    # and a model built with another theta, loaded with these weights, differs too
    other = FlexBertForMaskedLM(small_config(global_rope_theta=5000.0)).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (other.model(ids, cu_seqlens=cu, max_seqlen=max_len) - base).abs().max() > 1e-3


def test_rotary_off_with_absolute_positions():
    model = make_model(rotary=False, embedding="absolute_pos", max_position_embeddings=64)
    docs, ids, cu, max_len = packed_row([20, 30])
    with torch.no_grad():
        h = model.model(ids, cu_seqlens=cu, max_seqlen=max_len)
        alone = model.model(docs[1])
    torch.testing.assert_close(h[20:], alone, atol=1e-5, rtol=1e-5)  # positions restart per document


# ------------------------------------------------------------------ classification
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classification_pooling_ignores_padding(pooling):
    model = make_model(FlexBertForSequenceClassification, classifier_pooling=pooling, num_labels=3)
    ids = torch.randint(4, VOCAB, (1, 9))
    with torch.no_grad():
        alone = model(ids).logits
        padded_ids = torch.cat([ids, torch.full((1, 7), PAD)], 1)
        mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 7)], 1).long()
        padded = model(padded_ids, attention_mask=mask).logits
        h = model.model(ids)[0]
        pooled = h[0] if pooling == "cls" else h.mean(0)
        ref = model.classifier(model.head(pooled))
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], ref, atol=1e-5, rtol=1e-5)
    out = model(padded_ids, attention_mask=mask, labels=torch.tensor([2]))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([2])))


# ------------------------------------------------------------------ init, backends, imports
@pytest.mark.parametrize("scheme", ["normal", "full_megatron"])
def test_init_schemes(scheme):
    torch.manual_seed(0)
    cfg = small_config(init=scheme, init_std=0.02, hidden_size=128, intermediate_size=256, num_hidden_layers=8)
    model = FlexBertModel(cfg)
    w_in = model.layers[2].attn.Wqkv.weight
    w_out = model.layers[2].mlp.Wo.weight
    expect_out = 0.02 / math.sqrt(2 * 8) if scheme == "full_megatron" else 0.02
    # a normal truncated at 2 sigma has std 0.88 sigma
    assert abs(w_in.std().item() / (0.02 * 0.88) - 1) < 0.05
    assert abs(w_out.std().item() / (expect_out * 0.88) - 1) < 0.05
    assert w_in.abs().max() <= 2 * 0.02 + 1e-7 and w_out.abs().max() <= 2 * expect_out + 1e-7
    assert torch.all(model.layers[2].mlp_norm.weight == 1)


def test_backend_resolution_on_cpu():
    assert resolve_backend("auto", torch.device("cpu"), torch.float32).name == "sdpa"
    assert resolve_backend("auto", torch.device("cpu"), torch.bfloat16).name == "sdpa"
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="attention_backend 'varlen'"):
            resolve_backend("varlen", torch.device("cpu"), torch.float32)


def test_import_flexbert_does_not_import_composer():
    code = (
        "import sys, flexbert; flexbert.FlexBertForMaskedLM; import flexbert.convert.hf, flexbert.model.model;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('composer', 'streaming')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rope_tables_hold_the_configured_thetas_value():
    """Not only 'a theta change changes outputs': each layer kind's table is the RoPE formula at its
    own theta (global 1000, local 100 here), position by position within each document."""
    import math

    model = make_model(num_hidden_layers=3, global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=100.0)
    docs, ids, cu, max_len = packed_row([7, 5])
    batch = model.model.prepare_batch(cu, max_len, ids.shape[0])
    d = model.config.head_dim
    for kind, theta in (("global", 1000.0), ("local", 100.0)):
        cos, sin = batch.rope[kind]
        for t, pos in enumerate([*range(7), *range(5)]):  # positions restart in each document
            for i in range(d // 2):
                angle = pos / theta ** (2 * i / d)
                assert math.isclose(float(cos[t, i]), math.cos(angle), abs_tol=1e-5), (kind, t, i)
                assert math.isclose(float(sin[t, i + d // 2]), math.sin(angle), abs_tol=1e-5), (kind, t, i)
    guard = make_model(num_hidden_layers=3, global_attn_every_n_layers=3, global_rope_theta=2000.0)
    cos2, _ = guard.model.prepare_batch(cu, max_len, ids.shape[0]).rope["global"]
    assert not math.isclose(float(cos2[3, 1]), math.cos(3 / 1000.0 ** (2 / d)), abs_tol=1e-5)  # another theta fails
