"""Compile once: fixed row shapes (flexbert/model/static.py) and one compile switch
(flexbert/model/compile.py).  Counts dynamo compilations over batches with different documents."""

from __future__ import annotations

import logging

import pytest
import torch

from flexbert.model.config import FlexBertConfig
from flexbert.model.attention import batch_info
from flexbert.model.backends import SDPABackend
from flexbert.model.compile import compile_model
from flexbert.model.static import StaticShapes, pad_cu_seqlens
from flexbert.train.composer_model import FlexBertMLM
from test_model import naive_attention  # the attention definition, shared

VOCAB, PAD, IGNORE = 97, 0, -100
ROW, SEQ = 192, 48  # a row of 4 x 48 tokens


def config(**overrides) -> FlexBertConfig:
    data = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        local_attention=8, global_attn_every_n_layers=3, pad_token_id=PAD, cls_token_id=1, sep_token_id=2,
        mask_token_id=3, attn_out_dropout=0.0, attention_backend="sdpa", init_std=0.2, mlm_loss="chunked",
    )  # fmt: skip
    data.update(overrides)
    return FlexBertConfig.from_dict(data)


def loader_row(seed: int) -> dict:
    """A row as the loader makes it: documents of random lengths (<= SEQ), a padding tail cut into
    segments of at most SEQ, 30% of the real tokens masked, host counts."""
    g = torch.Generator().manual_seed(seed)
    lens, used = [], 0
    longest = 12 + (seed * 13) % (SEQ - 11)  # rows differ in how many documents they hold
    while True:
        n = int(torch.randint(3, longest + 1, (), generator=g))
        if used + n > ROW - 10:
            break
        lens.append(n)
        used += n
    tail = ROW - used
    segments = lens + [SEQ] * (tail // SEQ) + ([tail % SEQ] if tail % SEQ else [])
    ids = torch.cat([torch.randint(4, VOCAB, (used,), generator=g), torch.full((tail,), PAD)])
    labels = torch.where(torch.rand(ROW, generator=g) < 0.3, ids, torch.full_like(ids, IGNORE))
    labels[used:] = IGNORE
    cu = torch.tensor([0, *torch.tensor(segments).cumsum(0).tolist()], dtype=torch.int32)
    return dict(input_ids=ids, labels=labels, cu_seqlens=cu, max_seqlen=max(segments), num_tokens=used,
                num_masked=int((labels != IGNORE).sum()))  # fmt: skip


def composer_model(seed: int = 0, **overrides) -> FlexBertMLM:
    torch.manual_seed(seed)
    cfg = config(**overrides)
    shapes = StaticShapes.for_rows(ROW, SEQ, 0.3, cfg.sparse_prediction)
    return FlexBertMLM(cfg, shapes=shapes)


class CountingBackend:
    """A dynamo backend that runs the traced graph as is and counts how often it was asked to compile."""

    def __init__(self) -> None:
        self.compiles = 0

    def __call__(self, gm, example_inputs):
        self.compiles += 1
        return gm.forward


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_no_recompilation_across_batches(mode, sparse):
    torch._dynamo.reset()
    model = composer_model(sparse_prediction=sparse).train()
    backend = CountingBackend()
    compile_model(model.model, mode, backend=backend)
    rows = [loader_row(seed) for seed in range(7)]
    assert len({r["cu_seqlens"].numel() for r in rows}) >= 4 and len({r["max_seqlen"] for r in rows}) >= 2
    assert len({r["num_masked"] for r in rows}) >= 4
    after_first = None
    for i, row in enumerate(rows):
        out = model(row)
        model.loss(out, row).backward()
        assert torch.isfinite(out.loss) and int(out.stats.count) == row["num_masked"]
        if i == 0:
            after_first = backend.compiles
    assert after_first > 0, "nothing was compiled"
    assert backend.compiles == after_first, f"{backend.compiles - after_first} recompilations after the first batch"


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_compiled_equals_eager(mode):
    """Loss, accuracy counts and gradients of the compiled model equal the eager model's, for
    rows padded to fixed shapes and for the rows as they come."""
    torch._dynamo.reset()
    eager, compiled = composer_model(seed=1).train(), composer_model(seed=1).train()
    compile_model(compiled.model, mode, backend="aot_eager")
    plain = FlexBertMLM(eager.config, model=eager.model)  # the same weights, rows unpadded
    for seed in (11, 12, 13):
        row = loader_row(seed)
        results = []
        for m in (plain, eager, compiled):
            m.model.zero_grad()
            out = m(row)
            out.loss.backward()
            results.append((out, {n: p.grad.clone() for n, p in m.model.named_parameters()}))
        (ref, ref_g), *others = results
        for out, g in others:
            torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
            assert int(out.stats.correct) == int(ref.stats.correct) and int(out.stats.count) == int(ref.stats.count)
            for name, grad in ref_g.items():
                torch.testing.assert_close(g[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_capacity_grows_once_with_a_warning(caplog):
    model = composer_model(seed=2).eval()
    row = loader_row(5)
    model.shapes.max_docs, model.shapes.max_predictions = 2, 8
    with torch.no_grad():
        ref = FlexBertMLM(model.config, model=model.model)(row)
        with caplog.at_level(logging.WARNING):
            out = model(row)
    assert model.shapes.max_docs >= row["cu_seqlens"].numel() - 1
    assert model.shapes.max_predictions >= row["num_masked"]
    assert sum("static capacity" in r.message for r in caplog.records) == 2
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)


def test_row_longer_than_max_seq_len_is_one_clear_line():
    model = composer_model()
    row = loader_row(0)
    row["max_seqlen"] = SEQ + 1
    with pytest.raises(ValueError, match=f"longer than max_seq_len {SEQ}"):
        model(row)


@pytest.mark.parametrize("window", [None, (4, 4), (1, 3), (40, 40)])
def test_sdpa_static_blocks_match_definition(window):
    """The static sdpa layout, with zero-length padding documents and a row that is not a
    multiple of max_seqlen, is exact; its shapes depend on the row size only."""
    torch.manual_seed(0)
    cu = pad_cu_seqlens(torch.tensor([0, 13, 14, 40, 47, 50, 52], dtype=torch.int32), 20)
    T, H, D, L = 52, 3, 8, 26
    q, k, v = (torch.randn(T, H, D, requires_grad=True) for _ in range(3))
    info = batch_info(cu, L, T, static=True)
    backend = SDPABackend()
    info.attn = backend.prepare(info, [window])
    assert info.attn["kind"] == "blocks" and info.attn["nb"] == 2
    got = backend(q, k, v, info, window, 0.0, D**-0.5)
    ref = naive_attention(q, k, v, cu, window, D**-0.5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    (g1,) = torch.autograd.grad(got.square().sum(), k)
    (g2,) = torch.autograd.grad(ref.square().sum(), k)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_static_shapes_from_the_data_config():
    s = StaticShapes.for_rows(98_304, 1024, 0.3, sparse=True)
    assert s.max_seqlen == 1024 and s.max_docs == 1536
    assert 98_304 * 0.3 < s.max_predictions < 98_304 * 0.3 + 1000 and s.max_predictions % 64 == 0
    assert StaticShapes.for_rows(98_304, 1024, 0.3, sparse=False).max_predictions is None


@pytest.mark.parametrize("mode", ["none", "blocks", "model"])
def test_build_model_pads_rows_only_when_compiling(tmp_path, mode):
    """Fixed shapes cost padding documents (and, for sdpa, block layouts); eager runs skip them."""
    from flexbert.train.recipe import build_model
    from flexbert.train.config import RunConfig
    from flexbert.config import from_dict

    cfg = from_dict(RunConfig, {"model": {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 48,
                                          "num_hidden_layers": 1, "num_attention_heads": 2},
                                "data": {"local": str(tmp_path), "max_seq_len": 64, "microbatch_size": 2},
                                "compile": mode}, "")
    model = build_model(cfg)
    if mode == "none":
        assert model.shapes is None
    else:
        assert model.shapes.max_seqlen == 64 and model.shapes.max_docs == 64
