"""Every registered norm, block and MLP against its formula, written out here with plain tensor
operations (not only "builds and trains"); each check has a guard: the formula of a neighbour
(LayerNorm for RMSNorm, pre-norm for post-norm...) does not match, so the check can fail."""

import math

import pytest
import torch
import torch.nn.functional as F

from flexbert.model.blocks import build_block
from flexbert.model.mlp import build_mlp
from flexbert.model.norms import build_norm
from flexbert.model.registries import BLOCKS, MLPS, NORMS
from test_model import packed_row, small_config


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights (norm scales and biases included) away from their init, so a wrong formula shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 else 0.0))


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3 + 0.7


@pytest.mark.parametrize("bias", [False, True])
def test_norms(bias):
    assert set(NORMS.choices) == {"layernorm", "rmsnorm"}  # a new norm gets its formula here
    x = _x(5, 32)
    rms = build_norm(small_config(norm="rmsnorm", norm_bias=bias))
    ln = build_norm(small_config(norm="layernorm", norm_bias=bias))
    _randomize(rms), _randomize(ln)
    eps = 1e-5
    want_rms = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * rms.weight + (rms.bias if bias else 0)
    centred = x - x.mean(-1, keepdim=True)
    want_ln = centred / torch.sqrt((centred * centred).mean(-1, keepdim=True) + eps) * ln.weight + (ln.bias if bias else 0)
    torch.testing.assert_close(rms(x), want_rms, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ln(x), want_ln, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ln(x), x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * ln.weight + (ln.bias if bias else 0),
                              atol=1e-3)  # guard: LayerNorm is not the RMS formula (x is not centred)
    # eps inside the root: on inputs whose mean square is about eps (here ~1e-5) the root of
    # (mean square + eps) differs by ~40% from root(mean square) + eps, so a misplaced eps shows
    small = x * 1e-3
    assert 0.3 * eps < float((small * small).mean()) < 3 * eps
    want_small = small / torch.sqrt((small * small).mean(-1, keepdim=True) + eps) * rms.weight + (rms.bias if bias else 0)
    torch.testing.assert_close(rms(small), want_small, atol=1e-5, rtol=1e-5)
    outside = small / (torch.sqrt((small * small).mean(-1, keepdim=True)) + eps) * rms.weight + (rms.bias if bias else 0)
    assert (outside - want_small).abs().max() > 0.1  # guard: eps outside the root is another function here


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_mlps(activation):
    assert set(MLPS.choices) == {"mlp", "glu"}
    x = _x(6, 32)
    act = {"gelu": F.gelu, "silu": F.silu}[activation]
    plain = build_mlp(small_config(mlp="mlp", activation=activation, mlp_in_bias=True, mlp_out_bias=True)).eval()
    glu = build_mlp(small_config(mlp="glu", activation=activation, mlp_in_bias=True, mlp_out_bias=True)).eval()
    _randomize(plain), _randomize(glu)
    want_plain = act(x @ plain.Wi.weight.T + plain.Wi.bias) @ plain.Wo.weight.T + plain.Wo.bias
    u = x @ glu.Wi.weight.T + glu.Wi.bias
    a, gate = u[:, :48], u[:, 48:]
    want_glu = (act(a) * gate) @ glu.Wo.weight.T + glu.Wo.bias
    torch.testing.assert_close(plain(x), want_plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(glu(x), want_glu, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(glu(x), (act(gate) * a) @ glu.Wo.weight.T + glu.Wo.bias, atol=1e-3)  # guard: halves swapped


def _block_formulas(blk, h, batch):
    attn = lambda x: blk.attn(x, batch)  # noqa: E731
    out = {}
    if hasattr(blk, "mlp_norm") and blk.attn_norm is not None:
        pre = h + attn(blk.attn_norm(h))
        out["prenorm"] = pre + blk.mlp(blk.mlp_norm(pre))
        post = blk.attn_norm(h + attn(h))
        out["postnorm"] = blk.mlp_norm(post + blk.mlp(post))
    if not hasattr(blk, "mlp_norm"):
        x = blk.attn_norm(h)
        out["parallel"] = h + attn(x) + blk.mlp(x)
        out["prenorm"] = (h + attn(x)) + blk.mlp(blk.attn_norm(h + attn(x)))  # guard: not parallel
    return out


@pytest.mark.parametrize("kind", ["prenorm", "postnorm", "parallel"])
def test_blocks(kind):
    assert set(BLOCKS.choices) == {"prenorm", "postnorm", "parallel"}
    cfg = small_config(block=kind, skip_first_prenorm=False)
    blk = build_block(cfg, 1).eval()
    _randomize(blk, seed=3)
    from flexbert.model import FlexBertModel

    model = FlexBertModel(cfg).eval()
    docs, ids, cu, max_len = packed_row([9, 7])
    batch = model.prepare_batch(cu, max_len, ids.shape[0])
    h = _x(ids.shape[0], 32)
    with torch.no_grad():
        got = blk(h, batch)
        formulas = _block_formulas(blk, h, batch)
    torch.testing.assert_close(got, formulas[kind], atol=1e-5, rtol=1e-5)
    others = [k for k in formulas if k != kind]
    assert others and all(not torch.allclose(got, formulas[k], atol=1e-3) for k in others)
    assert math.isfinite(float(got.abs().sum()))
