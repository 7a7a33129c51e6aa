"""Tokenizer identity (flexbert/data/fingerprint.py) and output folders that are never overwritten
silently (flexbert/data/outputs.py): the two data-side rules every tool relies on."""

import json
import os

import pytest

from data_fixtures.helpers import sentences
from flexbert.data.fingerprint import (FINGERPRINT_KEY, TokenizerMismatchError, check_same, common_fingerprint,
                                       shards_fingerprint, tokenizer_fingerprint)
from flexbert.data.outputs import OutputError, prepare_output_dir


def _bpe(tmp_path, name: str, seed: int, vocab: int = 300) -> str:
    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    d = str(tmp_path / name)
    save_tokenizer(train_bpe(sentences(400, seed=seed), vocab_size=vocab, min_frequency=2), d)
    return d


def test_fingerprint_is_the_tokenizer_not_its_file_or_size(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    a = _bpe(tmp_path, "a", seed=0)
    b = _bpe(tmp_path, "b", seed=1)  # same size, other vocabulary
    fp = tokenizer_fingerprint(a)
    assert len(Tokenizer.from_file(os.path.join(a, "tokenizer.json")).get_vocab()) == \
        len(Tokenizer.from_file(os.path.join(b, "tokenizer.json")).get_vocab())
    assert tokenizer_fingerprint(b) != fp
    hf = AutoTokenizer.from_pretrained(a)
    hf.save_pretrained(str(tmp_path / "resaved"))
    hf.model_max_length = 77  # incidental settings do not count
    assert tokenizer_fingerprint(hf) == tokenizer_fingerprint(str(tmp_path / "resaved")) == fp
    assert tokenizer_fingerprint(Tokenizer.from_file(os.path.join(a, "tokenizer.json"))) == fp
    with pytest.raises(TokenizerMismatchError, match=f"x uses tokenizer {fp}, y uses {tokenizer_fingerprint(b)}"):
        check_same(fp, "x", tokenizer_fingerprint(b), "y")
    check_same(fp, "x", None, "old shards")  # unknown on one side: no check
    with pytest.raises(TokenizerMismatchError, match="s1 .* s3"):
        common_fingerprint({"s1": fp, "s2": None, "s3": tokenizer_fingerprint(b)})


def test_shards_record_their_tokenizer_and_old_shards_fall_back_to_the_copy(tmp_path):
    from flexbert.data.shards import ShardOptions, tokenize_to_mds

    tok = _bpe(tmp_path, "tok", seed=0)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences(50)))
    out = str(tmp_path / "shards")
    tokenize_to_mds([str(corpus)], tok, out, ShardOptions(max_seq_len=64))
    stats = json.load(open(os.path.join(out, "stats.json")))
    assert stats[FINGERPRINT_KEY] == tokenizer_fingerprint(tok) == shards_fingerprint(out)
    del stats[FINGERPRINT_KEY]  # as written before fingerprints: the tokenizer copy answers
    json.dump(stats, open(os.path.join(out, "stats.json"), "w"))
    assert shards_fingerprint(out) == tokenizer_fingerprint(tok)
    assert shards_fingerprint(str(tmp_path / "nothing")) is None


def test_an_output_folder_is_replaced_only_when_asked_and_never_an_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        prepare_output_dir(out)
    assert (out / "README.md").read_text() == "mine"
    prepare_output_dir(out, overwrite=True)
    assert list(out.iterdir()) == []  # replaced whole: no stale file survives
    src = tmp_path / "run"
    (src / "checkpoints").mkdir(parents=True)
    for bad, where in ((src, "is the input"), (src / "checkpoints" / "x", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(OutputError, match=where):
            prepare_output_dir(bad, overwrite=True, inputs=[src / "checkpoints"] if where != "is the input" else [src])
    assert (src / "checkpoints").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        prepare_output_dir(tmp_path / "file", overwrite=True)


def test_streams_written_with_different_tokenizers_refuse_to_mix(tmp_path):
    from flexbert.data.config import DataConfig
    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.data.source import data_fingerprint
    from flexbert.data.shards import ShardOptions, tokenize_to_mds

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences(40)))
    toks = {"a": _bpe(tmp_path, "tok_a", seed=0), "b": _bpe(tmp_path, "tok_b", seed=1)}
    for name, tok in (("web", toks["a"]), ("code", toks["a"]), ("sci", toks["b"])):
        tokenize_to_mds([str(corpus)], tok, str(tmp_path / name), ShardOptions(max_seq_len=64, val_fraction=0.0, progress=False))
    same = DataConfig.from_dict({"streams": {n: {"local": str(tmp_path / n), "proportion": 1} for n in ("web", "code")}})
    assert data_fingerprint(same) == tokenizer_fingerprint(toks["a"])
    mixed = DataConfig.from_dict({"streams": {n: {"local": str(tmp_path / n), "proportion": 1} for n in ("web", "sci")}})
    with pytest.raises(TokenizerMismatchError, match=f"shards {tmp_path / 'web'} uses tokenizer .*, shards {tmp_path / 'sci'} uses"):
        data_fingerprint(mixed)


def test_train_tokenizer_refuses_a_non_empty_out_before_training(tmp_path, capsys):
    import runpy

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences(200)))
    out = tmp_path / "shards"
    out.mkdir()
    (out / "tokenizer.json").write_text("the shard folder's own tokenizer")
    args = ["bpe", "--input", str(corpus), "--vocab-size", "320", "--out", str(out)]
    main = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "data_prep", "train_tokenizer.py"))["main"]
    assert main(args) == 2 and "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_text() == "the shard folder's own tokenizer"
    assert main([*args[:-2], "--out", str(tmp_path)]) == 2  # holds the input
    assert main(args + ["--overwrite"]) == 0 and tokenizer_fingerprint(str(out))
