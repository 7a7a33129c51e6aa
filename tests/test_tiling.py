"""Weight tiling (flexbert/model/tiling.py, scripts/tile_weights.py): identity at equal size,
exact placement of the source in every tiled tensor, the Gopher layer mapping, and a tiled model
that transformers loads, trains, and that starts better than a fresh init."""

import os
import subprocess

import pytest
import torch
import yaml

from test_train_fixtures import PY, ROOT, build_and_fit, model_overrides, run_config

from flexbert.model.config import FlexBertConfig
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.tiling import TilingError, gopher_layer_map, tile_model, tile_state_dict


def _model(seed=0, **kw):
    base = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                local_attention=32, global_attn_every_n_layers=2, attn_qkv_bias=True, attn_out_bias=True,
                mlp_in_bias=True, mlp_out_bias=True, norm_bias=True)
    base.update(kw)
    torch.manual_seed(seed)
    return FlexBertForMaskedLM(FlexBertConfig.from_dict(base, prefix="model")).eval()


def test_gopher_mapping_picks_documented_layers():
    assert gopher_layer_map(2, 3) == [0, 1, 1]  # round(0), round(2/3), round(4/3)
    assert gopher_layer_map(4, 4) == [0, 1, 2, 3]
    assert gopher_layer_map(2, 5) == [0, 0, 1, 1, 2 - 1]  # round(1.6) = 2 is clamped to the last layer
    # ModernBERT base (22) -> large (28)
    assert gopher_layer_map(22, 28) == [round(i * 22 / 28) for i in range(28)]
    assert gopher_layer_map(22, 28)[27] == 21 and gopher_layer_map(22, 28)[14] == 11


@pytest.mark.parametrize("embedding", ["sans_pos", "absolute_pos"])
@pytest.mark.parametrize("mode", ["center_wraparound", "center", "edge"])
def test_same_size_is_identity(mode, embedding):
    src, tgt = _model(0, embedding=embedding), _model(1, embedding=embedding)
    tile_model(src, tgt, mode)
    x = torch.randint(5, 100, (2, 24))
    torch.testing.assert_close(tgt(x).logits, src(x).logits, rtol=0, atol=0)


def _src_index(t, s, mode):
    o = (t - s) // 2
    return [(j - o) % s if mode != "edge" else j % s for j in range(t)]


@pytest.mark.parametrize("mode", ["center_wraparound", "edge", "center"])
def test_wider_deeper_places_source_exactly(mode):
    src = _model(0, embedding="absolute_pos", max_position_embeddings=64)
    init = _model(1, embedding="absolute_pos", max_position_embeddings=64, hidden_size=160, intermediate_size=144,
                  num_hidden_layers=3, num_attention_heads=5)
    s_sd, i_sd = src.state_dict(), init.state_dict()
    out = tile_state_dict(s_sd, src.config, i_sd, init.config, mode)
    H, h, nh, NH, hd = 64, 160, 2, 5, 32
    hidx, nidx, iidx = _src_index(h, H, mode), _src_index(NH, nh, mode), _src_index(144, 96, mode)
    oH, oN, oI = ((h - H) // 2, (NH - nh) // 2, (144 - 96) // 2) if mode != "edge" else (0, 0, 0)
    for t_layer, s_layer in enumerate([0, 1, 1]):
        S = lambda k: s_sd[f"model.layers.{s_layer}.{k}"]  # noqa: E731
        T = lambda k: out[f"model.layers.{t_layer}.{k}"]  # noqa: E731
        I = lambda k: i_sd[f"model.layers.{t_layer}.{k}"]  # noqa: E731
        qkv_s, qkv_t = S("attn.Wqkv.weight").view(3, nh, hd, H), T("attn.Wqkv.weight").view(3, NH, hd, h)
        qkv_i = I("attn.Wqkv.weight").view(3, NH, hd, h)
        for p in range(3):  # Q, K, V separately, head by head
            for th in range(NH):
                for tj in (0, oH, oH + H - 1, h - 1):
                    centre = oN <= th < oN + nh and oH <= tj < oH + H
                    want = qkv_s[p, nidx[th], :, hidx[tj]] if (mode != "center" or centre) else qkv_i[p, th, :, tj]
                    assert torch.equal(qkv_t[p, th, :, tj], want), (mode, t_layer, p, th, tj)
            assert torch.equal(qkv_t[p, oN:oN + nh, :, oH:oH + H], qkv_s[p])  # the centre block
        wi_s, wi_t = S("mlp.Wi.weight").view(2, 96, H), T("mlp.Wi.weight").view(2, 144, h)
        for part in range(2):  # GLU input and gate separately
            assert torch.equal(wi_t[part, oI:oI + 96, oH:oH + H], wi_s[part])
            if mode != "center":
                assert torch.equal(wi_t[part], wi_s[part][iidx][:, hidx])
        wo_s, wo_t = S("attn.Wo.weight").view(H, nh, hd), T("attn.Wo.weight").view(h, NH, hd)
        assert torch.equal(wo_t[oH:oH + H, oN:oN + nh], wo_s)
        if mode != "center":
            assert torch.equal(wo_t, wo_s[hidx][:, nidx])
            assert torch.equal(T("mlp_norm.bias"), S("mlp_norm.bias")[hidx])
    emb_s, emb_t = s_sd["model.embeddings.tok_embeddings.weight"], out["model.embeddings.tok_embeddings.weight"]
    assert torch.equal(emb_t[:, oH:oH + H], emb_s)
    assert torch.equal(out["model.embeddings.position_embeddings.weight"][:, oH:oH + H],
                       s_sd["model.embeddings.position_embeddings.weight"])
    assert torch.equal(out["decoder.weight"], emb_t) and torch.equal(out["decoder.bias"], s_sd["decoder.bias"])
    assert torch.equal(out["head.dense.weight"][oH:oH + H, oH:oH + H], s_sd["head.dense.weight"])
    if mode == "center":  # outside the centre block the fresh init stays
        assert torch.equal(emb_t[:, :oH], i_sd["model.embeddings.tok_embeddings.weight"][:, :oH])
    else:
        assert torch.equal(emb_t, emb_s[:, hidx])
    # layer 1 of the source has attn_norm; target layer 2 (mapped to source layer 1) gets it
    assert torch.equal(out["model.layers.2.attn_norm.weight"], s_sd["model.layers.1.attn_norm.weight"][hidx]) or mode == "center"


@pytest.mark.parametrize("kw, msg", [
    (dict(vocab_size=120), "model.vocab_size"),
    (dict(hidden_size=32, num_attention_heads=1), "model.hidden_size: target 32 is smaller"),
    (dict(num_hidden_layers=1), "model.num_hidden_layers: target 1 is smaller"),
    (dict(hidden_size=96, num_attention_heads=2, intermediate_size=96), "head size 48 is not a multiple of the source's 32"),
])
def test_refuses_what_cannot_be_tiled(kw, msg):
    src, tgt = _model(0), _model(1, **kw)
    with pytest.raises(TilingError, match=msg):
        tile_model(src, tgt)


# ---------------------------------------------------------------- end to end: run -> tiled HF folder
@pytest.fixture(scope="module")
def source_run(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("tile_src")
    cfg = run_config(tmp, data, max_duration="40ba", save_interval="40ba", optimizer={"lr": 3e-3},
                     scheduler={"name": "constant_with_warmup", "t_warmup": "4ba"})
    build_and_fit(cfg)
    return cfg


def _held_out_batch(tok_dir, seed=0):
    """Masked-LM batch from text the source never saw (stdlib module docstrings)."""
    import argparse
    import email
    import json as json_mod
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    texts = [m.__doc__.strip() for m in (argparse, email, json_mod)]
    enc = tok(texts, truncation=True, max_length=96, padding="max_length", return_tensors="pt")
    g = torch.Generator().manual_seed(seed)
    pick = (torch.rand(enc["input_ids"].shape, generator=g) < 0.3) & (enc["attention_mask"] == 1)
    labels = torch.where(pick, enc["input_ids"], torch.full_like(enc["input_ids"], -100))
    ids = torch.where(pick, torch.full_like(enc["input_ids"], tok.mask_token_id), enc["input_ids"])
    return dict(input_ids=ids, attention_mask=enc["attention_mask"], labels=labels)


def _tile(tmp_path, source_run, mode, *extra):
    target = dict(run_config(tmp_path, source_run["data"]["local"]), model=model_overrides(hidden=128, layers=3))
    target_yaml = tmp_path / "wide.yaml"
    target_yaml.write_text(yaml.safe_dump(target))
    out = tmp_path / f"tiled-{mode}{''.join(extra)}"
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/tile_weights.py"), "--from", source_run["run_dir"],
                        "--config", str(target_yaml), "--mode", mode, "--out", str(out), *extra], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[0, 1, 1]" in r.stdout
    return out


def test_tiled_run_loads_in_transformers_and_trains(tmp_path, source_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = _tile(tmp_path, source_run, "center_wraparound")
    hf = AutoModelForMaskedLM.from_pretrained(str(out))
    assert hf.config.hidden_size == 128 and hf.config.num_hidden_layers == 3
    AutoTokenizer.from_pretrained(str(out))
    batch = _held_out_batch(str(out))
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = hf(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


# held-out loss a real `center` tiling gains over a tiling of the biases only: 0.063 nats measured
# (6.862 against 6.925); a tiling that moved only the biases gains exactly 0 (planted,
# docs/planted-defects.md); other fresh-init seeds move the biases-only loss by up to 0.047, which
# is why the guard uses the tile script's own seed
BIASES_ONLY_MARGIN = 0.02


def test_tiled_wider_model_beats_fresh_init_and_a_biases_only_tiling_on_held_out_text(tmp_path, source_run):
    """Mode `center` (source in the middle, fresh init around it).  Plain wrap-around tiling
    (no rescaling) sums duplicated inputs, so a weakly trained tiny source loses its edge there."""
    from transformers import AutoModelForMaskedLM

    from flexbert.convert.hf import from_hf

    out = _tile(tmp_path, source_run, "center")
    hf = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    batch = _held_out_batch(str(out))
    torch.manual_seed(0)
    fresh = AutoModelForMaskedLM.from_config(hf.config).eval()
    # guard: the decoder bias (the unigram prior) is worth a lot on its own, so the tiled model must
    # beat a tiling of the biases only: the tile script's own fresh init (seed 0) with every bias of
    # the tiled model and nothing else -- what a tiling that moved only the biases would write
    tiled = from_hf(str(out)).eval()
    torch.manual_seed(0)
    biases_only = FlexBertForMaskedLM(tiled.config).eval()
    with torch.no_grad():
        for name, t in biases_only.state_dict().items():
            if name.endswith("bias"):
                t.copy_(tiled.state_dict()[name])
        tiled_loss, fresh_loss = hf(**batch).loss.item(), fresh(**batch).loss.item()
        bias_loss = biases_only(**batch).loss.item()
    assert tiled_loss < fresh_loss and tiled_loss < bias_loss - BIASES_ONLY_MARGIN, (tiled_loss, bias_loss, fresh_loss)


def test_rescaled_wraparound_keeps_the_source_on_held_out_text(tmp_path, source_run):
    """ModernBERT-large's mode with --rescale, wider and one layer deeper: close to the source's own
    held-out loss, better than a fresh init and than plain wrap-around."""
    from transformers import AutoModelForMaskedLM

    from flexbert.weights.export import export_to_hf

    export_to_hf(str(tmp_path / "source-hf"), run_dir=source_run["run_dir"])
    source = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "source-hf")).eval()
    rescaled = AutoModelForMaskedLM.from_pretrained(str(_tile(tmp_path, source_run, "center_wraparound", "--rescale"))).eval()
    plain = AutoModelForMaskedLM.from_pretrained(str(_tile(tmp_path, source_run, "center_wraparound"))).eval()
    batch = _held_out_batch(str(tmp_path / "source-hf"))
    torch.manual_seed(0)
    fresh = AutoModelForMaskedLM.from_config(rescaled.config).eval()
    with torch.no_grad():
        loss = {k: m(**batch).loss.item() for k, m in
                dict(source=source, rescaled=rescaled, plain=plain, fresh=fresh).items()}
    assert loss["rescaled"] < min(loss["fresh"], loss["plain"]), loss
    assert abs(loss["rescaled"] - loss["source"]) < 0.5 * abs(loss["plain"] - loss["source"]), loss


def test_tile_script_errors_in_one_line(tmp_path, source_run):
    target = dict(run_config(tmp_path, source_run["data"]["local"]), model=model_overrides(vocab=2048, hidden=128))
    target_yaml = tmp_path / "bad.yaml"
    target_yaml.write_text(yaml.safe_dump(target))
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/tile_weights.py"), "--from", source_run["run_dir"],
                        "--config", str(target_yaml), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "model.vocab_size" in r.stderr, r.stderr


# ---------------------------------------------------------------- rescale: keeping the source's function
@pytest.mark.parametrize("mode", ["center_wraparound", "edge"])
@pytest.mark.parametrize("bias", [True, False])
def test_rescaled_whole_multiple_growth_keeps_the_source_logits(mode, bias):
    """Twice as wide (heads doubled, head size kept), same depth: with rescale the grown model
    computes the source's function (logits equal); without, the copies add up and it does not."""
    kw = dict(attn_qkv_bias=bias, attn_out_bias=bias, mlp_in_bias=bias, mlp_out_bias=bias, norm_bias=bias,
              head_bias=bias, decoder_bias=bias)
    src = _model(seed=1, **kw)
    ids = torch.randint(4, 100, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    with torch.no_grad():
        want = src(ids, attention_mask=mask).logits
    grown = {}
    for rescale in (True, False):
        tgt = _model(seed=2, hidden_size=128, intermediate_size=192, num_attention_heads=4, **kw)
        tile_model(src, tgt, mode, rescale=rescale)
        with torch.no_grad():
            grown[rescale] = tgt(ids, attention_mask=mask).logits
    torch.testing.assert_close(grown[True], want, rtol=1e-4, atol=1e-4)
    assert (grown[False] - want).abs().max() > 0.1


def test_rescale_refuses_center_mode():
    with pytest.raises(TilingError, match="rescale applies to the copying modes"):
        tile_model(_model(), _model(hidden_size=128, num_attention_heads=4), "center", rescale=True)
