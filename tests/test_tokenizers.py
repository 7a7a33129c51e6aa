"""Tokenizers: BERT specials and template, vocab padding, offline AutoTokenizer loading, and the
50,368-token ModernBERT layout built from GPT-2's ranks (when the whisper sdist is cached)."""

from __future__ import annotations

import os
import sys


from data_fixtures.helpers import sentences, small_tokenizer_dir
from flexbert.data.tokenizer import (
    SpecialTokens, build_modernbert_tokenizer, load_tokenizer, save_tokenizer, special_tokens_template, train_bpe,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_small_bpe_has_bert_specials_template_and_padded_vocab(tmp_path_factory):
    d = small_tokenizer_dir(tmp_path_factory)
    t = load_tokenizer(d)
    s = SpecialTokens.from_tokenizer(t)
    assert s.vocab_size % 64 == 0
    assert (s.pad_id, s.unk_id, s.cls_id, s.sep_id, s.mask_id) == (0, 1, 2, 3, 4)
    enc = t.encode("the river")
    assert enc.ids[0] == s.cls_id and enc.ids[-1] == s.sep_id
    pair = t.encode("the river", "a city")
    assert pair.ids.count(s.sep_id) == 2 and pair.type_ids[-1] == 1
    assert special_tokens_template(t) == ([s.cls_id], [s.sep_id])
    text = "Ünïcödé façade — naïve café 😀 漢字 and\ttabs"
    assert t.decode(t.encode(text).ids) == text  # byte-level: exact round trip, [CLS]/[SEP] skipped
    assert set(s.replacement_ids()).isdisjoint(s.special_ids)


def test_vocab_is_padded_with_unused_tokens(tmp_path):
    t = train_bpe(sentences(200), vocab_size=4000, min_frequency=2)  # the corpus runs out of merges first
    n = t.get_vocab_size(with_added_tokens=True)
    assert n % 64 == 0 and n < 4032
    s = SpecialTokens.from_tokenizer(t)
    unused = [i for i in s.special_ids if t.id_to_token(i).startswith("[unused")]
    assert len(unused) + 5 == len(s.special_ids) and unused  # the padding is special: never masked or drawn


def test_auto_tokenizer_loads_offline(tmp_path_factory, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = small_tokenizer_dir(tmp_path_factory)
    hf = AutoTokenizer.from_pretrained(d)
    t = load_tokenizer(d)
    assert hf("the city")["input_ids"] == t.encode("the city").ids
    assert (hf.cls_token, hf.sep_token, hf.mask_token, hf.pad_token, hf.unk_token) == ("[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]")
    assert hf.pad_token_id == 0 and len(hf) == t.get_vocab_size(with_added_tokens=True)
    # [MASK] takes the space before it, as a masked word's token (" city") did in training
    assert hf("the [MASK] is")["input_ids"] == t.encode("the [MASK] is").ids
    assert t.encode("the [MASK] is").ids == t.encode("the[MASK] is").ids


def _tiktoken():
    """gpt2.tiktoken from the whisper sdist (800 KB, fetched from PyPI into a cache outside the
    checkout when missing); skips only when the download itself fails, e.g. without network."""
    sys.path.insert(0, os.path.join(REPO, "data_prep"))
    from flexbert.data.demo_sources import gpt2_tiktoken_path

    from data_fixtures.helpers import download_cache, fetched

    return fetched(gpt2_tiktoken_path, download_cache())  # skips only when the download fails


def test_modernbert_tokenizer_layout(tmp_path):
    from transformers import AutoTokenizer

    t = build_modernbert_tokenizer(_tiktoken())
    s = SpecialTokens.from_tokenizer(t)
    assert s.vocab_size == 50368
    assert (s.unk_id, s.cls_id, s.sep_id, s.pad_id, s.mask_id) == (50280, 50281, 50282, 50283, 50284)
    assert sum(t.id_to_token(i).startswith("[unused") for i in range(50285, 50368)) == 83
    # GPT-2's own ids: "Hello world" is [15496, 995] in GPT-2
    assert t.encode("Hello world").ids == [50281, 15496, 995, 50282]
    assert t.token_to_id("<|endoftext|>") == 50256
    text = "def f(x):\n    return x**2  # ünïcode 😀"
    assert t.decode(t.encode(text).ids) == text
    save_tokenizer(t, str(tmp_path))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf("a [MASK] b")["input_ids"] == [50281, 64, 50284, 275, 50282]  # [MASK] takes the space
