"""Conversion to/from transformers' ModernBERT: numerical parity both ways, and honest refusals."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForMaskedLM, ModernBertConfig, ModernBertForMaskedLM  # noqa: E402

from flexbert.model.config import FlexBertConfig  # noqa: E402
from flexbert.convert.hf import DIGEST_KEY, ConversionError, config_from_hf, config_to_hf, from_hf, to_hf  # noqa: E402
from flexbert.model import FlexBertForMaskedLM  # noqa: E402

VOCAB = 211


def hf_config(**overrides) -> ModernBertConfig:
    kw = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=5, num_attention_heads=4,
        global_attn_every_n_layers=3, local_attention=8,  # layers 0, 3 global; 1, 2, 4 local
        global_rope_theta=1000.0, local_rope_theta=100.0, initializer_range=0.2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )  # fmt: skip
    kw.update(overrides)
    return ModernBertConfig(**kw)


def random_hf(attn_impl="sdpa", seed=0, **overrides) -> ModernBertForMaskedLM:
    torch.manual_seed(seed)
    cfg = hf_config(**overrides)
    cfg._attn_implementation = attn_impl
    model = ModernBertForMaskedLM(cfg).eval()
    with torch.no_grad():  # norms and biases start at 1 / 0: move them so a mix-up would show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


def padded_batch(lens=(40, 23, 7, 31), seed=0):
    g = torch.Generator().manual_seed(seed)
    S = max(lens)
    ids = torch.randint(3, VOCAB, (len(lens), S), generator=g)
    mask = torch.zeros(len(lens), S, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, :n] = 1
    ids[mask == 0] = 0
    labels = torch.where((torch.rand(ids.shape, generator=g) < 0.3) & mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
@pytest.mark.parametrize("biases", [False, True], ids=["nobias", "bias"])
def test_from_hf_parity(attn_impl, biases):
    extra = dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True) if biases else {}
    hf = random_hf(attn_impl, **extra)
    fb = from_hf(hf).eval()
    ids, mask, labels = padded_batch()  # 40 and 31 tokens are far longer than the 8-token window
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        got = fb(ids, attention_mask=mask, labels=labels)
        real = mask.bool()
        assert (got.logits[real] - ref.logits[real]).abs().max() < 1e-4
        torch.testing.assert_close(got.loss, ref.loss, atol=1e-5, rtol=1e-5)
        # the same documents packed into one row give the same logits
        cu = torch.tensor([0] + mask.sum(1).cumsum(0).tolist(), dtype=torch.int32)
        packed = fb(ids[real], cu_seqlens=cu, max_seqlen=int(mask.sum(1).max())).logits
        assert (packed - ref.logits[real]).abs().max() < 1e-4


def test_parity_is_sensitive_to_window_and_theta():
    """Guard the parity test: HF with another window or theta must *not* match, else the
    comparison above could not catch a wrong window or a wrong theta."""
    hf = random_hf()
    fb = from_hf(hf).eval()
    ids, mask, _ = padded_batch()
    real = mask.bool()
    with torch.no_grad():
        base = fb(ids, attention_mask=mask).logits[real]
        for change in (dict(local_attention=16), dict(local_rope_theta=10000.0), dict(global_rope_theta=160000.0)):
            other = ModernBertForMaskedLM(hf_config(**change)).eval()
            other.load_state_dict(hf.state_dict())
            assert (other(input_ids=ids, attention_mask=mask).logits[real] - base).abs().max() > 1e-3, change


def test_from_hf_dir_and_to_hf_roundtrip(tmp_path):
    hf = random_hf()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    fb = from_hf(tmp_path / "hf").eval()
    ids, mask, labels = padded_batch(seed=3)
    real = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits[real]
        assert (fb(ids, attention_mask=mask).logits[real] - ref).abs().max() < 1e-4
    assert fb.decoder.weight is fb.model.embeddings.tok_embeddings.weight


@pytest.mark.parametrize("tie", [True, False])
def test_to_hf_loads_in_transformers_with_same_logits(tmp_path, tie):
    torch.manual_seed(0)
    cfg = FlexBertConfig.from_dict(
        dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             local_attention=8, init_std=0.2, global_rope_theta=1000.0, local_rope_theta=100.0, pad_token_id=0,
             cls_token_id=1, sep_token_id=2, activation="silu", tie_word_embeddings=tie, attn_qkv_bias=True,
             attn_out_bias=True, decoder_bias=True)
    )  # fmt: skip
    fb = FlexBertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in fb.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    out = to_hf(fb, tmp_path / "export")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert meta["format"] == "pt" and meta.keys() == {"format", DIGEST_KEY}  # the checksum load_safetensors checks
    assert ("decoder.weight" in keys) == (not tie)
    assert "model.layers.0.attn_norm.weight" not in keys and "model.layers.1.attn_norm.weight" in keys
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["model_type"] == "modernbert" and hf_cfg["hidden_activation"] == "silu"
    hf = AutoModelForMaskedLM.from_pretrained(str(out), attn_implementation="sdpa").eval()
    if tie:
        assert hf.decoder.weight.data_ptr() == hf.model.embeddings.tok_embeddings.weight.data_ptr()
    ids, mask, labels = padded_batch(seed=5)
    real = mask.bool()
    with torch.no_grad():
        ref = fb(ids, attention_mask=mask, labels=labels)
        got = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert (got.logits[real] - ref.logits[real]).abs().max() < 1e-4
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-5, rtol=1e-5)
    # and back again: the FlexBERT config survives the round trip
    again = from_hf(out)
    # training-only options are exported as transformers' defaults (see flexbert/convert/hf.py)
    expected = dataclasses.replace(fb.config, sparse_prediction=False, attn_out_dropout=0.0)
    assert again.config == expected


def test_config_roundtrip_keeps_every_expressible_option():
    cfg = FlexBertConfig.from_dict(
        dict(vocab_size=1000, hidden_size=96, intermediate_size=200, num_hidden_layers=7, num_attention_heads=6,
             max_position_embeddings=2048, norm_eps=1e-6, norm_bias=True, activation="gelu_tanh",
             head_activation="relu", global_attn_every_n_layers=2, local_attention=64, global_rope_theta=50000.0,
             local_rope_theta=5000.0, attn_qkv_bias=True, attn_out_bias=True, mlp_in_bias=True, mlp_out_bias=True,
             head_bias=True, decoder_bias=False, embedding_dropout=0.05, attention_dropout=0.1,
             attn_out_dropout=0.1, mlp_dropout=0.02, sparse_prediction=False, tie_word_embeddings=False, num_labels=5,
             classifier_pooling="mean", classifier_dropout=0.3, pad_token_id=7, cls_token_id=8, sep_token_id=9,
             init_std=0.03, init_cutoff_factor=3.0)
    )  # fmt: skip
    assert config_from_hf(config_to_hf(cfg)) == cfg


def test_recipe_dropouts_export_as_zero():
    cfg = FlexBertConfig()  # ModernBERT recipe: 0.0 on probabilities, 0.1 on the attention output
    assert config_to_hf(cfg).attention_dropout == 0.0


@pytest.mark.parametrize(
    "option",
    [
        dict(norm="rmsnorm"),
        dict(block="postnorm"),
        dict(block="parallel"),
        dict(embedding="absolute_pos"),
        dict(mlp="mlp"),
        dict(rotary=False, embedding="absolute_pos"),
        dict(skip_first_prenorm=False),
        dict(final_norm=False),
        dict(attn_qkv_bias=True),
        dict(mlp_out_bias=True),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_to_hf_refuses_what_modernbert_cannot_express(tmp_path, option):
    cfg = FlexBertConfig.from_dict(dict(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                        num_attention_heads=2, pad_token_id=0, **option))  # fmt: skip
    model = FlexBertForMaskedLM(cfg)
    named = next(k for k in option if k != "embedding") if len(option) > 1 else next(iter(option))
    with pytest.raises(ConversionError, match=f"model.{named}"):
        to_hf(model, tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_to_hf_from_state_dict_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "[UNK]": 4, "hello": 5, "world": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cfg = FlexBertConfig.from_dict(dict(vocab_size=16, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                        num_attention_heads=2, pad_token_id=0, cls_token_id=1, sep_token_id=2,
                                        mask_token_id=3))  # fmt: skip
    model = FlexBertForMaskedLM(cfg)
    with pytest.raises(ConversionError, match="config="):
        to_hf(model.state_dict(), tmp_path / "a")
    out = to_hf(model.state_dict(), tmp_path / "a", tokenizer=tok, config=cfg)
    loaded = AutoTokenizer.from_pretrained(str(out))
    assert loaded.mask_token == "[MASK]" and loaded.pad_token_id == 0
    assert loaded("hello world")["input_ids"] == [5, 6]
    bad = dict(model.state_dict())
    bad.pop("model.final_norm.weight")
    with pytest.raises(ConversionError, match="model.final_norm.weight"):
        to_hf(bad, tmp_path / "b", config=cfg)
