"""Vocabularies above 65,535: shards hold uint32 ids, end to end (tokenize, read, pack, train).

The tokenizer is a real byte-level BPE of exactly 70,000 entries: a small trained BPE whose merges
are extended, in rank order, to every space-prefixed lowercase word of up to three letters and then
of four letters until the vocabulary is full.  Four-letter words such as " cwym" therefore encode
to single ids near 70,000, which uint16 would wrap."""

from __future__ import annotations

import itertools
import json
import os
import random
import string

import numpy as np
import pytest

from data_fixtures.helpers import clean_shm, original_ids, sentences
from test_train_fixtures import build_and_fit, model_overrides, read_jsonl, run_config

VOCAB = 70_000


def _tokenizer(root: str) -> tuple[str, list[str]]:
    """(folder, words that encode to one id above 69,000, highest id first)."""
    from tokenizers import Tokenizer

    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    tok = train_bpe(sentences(2000), vocab_size=512, min_frequency=2)
    spec = json.loads(tok.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    next_id = tok.get_vocab_size(with_added_tokens=True)
    for n in range(0, 4):
        for prefix in itertools.product(string.ascii_lowercase, repeat=n):
            for c in string.ascii_lowercase:
                left = "\u0120" + "".join(prefix)  # byte-level BPE writes a leading space as U+0120
                if next_id < VOCAB and left + c not in vocab:
                    vocab[left + c], next_id = next_id, next_id + 1
                    merges.append([left, c])
    big = Tokenizer.from_str(json.dumps(spec))
    assert big.get_vocab_size(with_added_tokens=True) == VOCAB
    d = os.path.join(root, "tok70k")
    save_tokenizer(big, d)
    words = [w[1:] for w, i in sorted(vocab.items(), key=lambda kv: -kv[1]) if i > 69_000]  # highest ids first
    words = [w for w in words if len(big.encode(" " + w, add_special_tokens=False).ids) == 1]
    assert len(words) > 100
    return d, words


def _texts(n: int, words: list[str], seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    high = words[:64]
    return [f"{s} {rng.choice(high)} {rng.choice(high)} and {rng.choice(high)}." for s in sentences(n, seed=seed)]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    from flexbert.data.shards import ShardOptions, tokenize_to_mds

    root = tmp_path_factory.mktemp("uint32")
    tok_dir, words = _tokenizer(str(root))
    texts = _texts(1500, words)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = str(root / "shards")
    stats = tokenize_to_mds([str(corpus)], tok_dir, out, ShardOptions(max_seq_len=64, val_fraction=0.05, progress=False,
                                                                      size_limit="64kb"))
    return {"tok": tok_dir, "out": out, "texts": texts, "stats": stats}


def test_shards_store_uint32_and_round_trip(wide):
    from streaming import StreamingDataset

    from flexbert.data.shards import in_validation
    from flexbert.data.tokenizer import load_tokenizer

    assert wide["stats"]["dtype"] == "uint32" and wide["stats"]["vocab_size"] == VOCAB
    with open(os.path.join(wide["out"], "train", "index.json")) as f:
        shards = json.load(f)["shards"]
    assert {s["column_encodings"][s["column_names"].index("input_ids")] for s in shards} == {"ndarray:uint32"}

    tok = load_tokenizer(wide["tok"])
    want = [tok.encode(t).ids for t in wide["texts"] if not in_validation(t, 0.05)]
    clean_shm()
    ds = StreamingDataset(local=wide["out"], split="train", shuffle=False, batch_size=1)
    got = [ds[i]["input_ids"] for i in range(ds.num_samples)]
    clean_shm()
    assert len(got) == len(want) > 1000
    assert all(g.dtype == np.uint32 for g in got)
    assert [g.tolist() for g in got] == want  # exact, the ids above 65,535 included
    assert max(max(w) for w in want) > 69_900 and min(max(w) for w in want) > 69_000


def test_packed_rows_keep_ids_above_65535(wide):
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    cfg = DataConfig(local=wide["out"], max_seq_len=64, microbatch_size=4, num_workers=0, doc_batch_size=16,
                     packer_buffer_size=32, shuffle=False, return_doc_ids=True)
    clean_shm()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    batch = next(iter(loader))
    clean_shm()
    row = batch["rows"][0]
    ids = original_ids(row)
    assert ids.max() > 65_535 and ids.max() < VOCAB
    labels = row["labels"].numpy()
    assert (labels[labels != -100] > 65_535).any()  # high ids are masked and predicted too
    # the packed documents are the shards' documents, in the order the row holds them
    from streaming import StreamingDataset

    ds = StreamingDataset(local=wide["out"], split="train", shuffle=False, batch_size=1)
    cu = row["cu_seqlens"].tolist()
    for k, doc_id in enumerate(row["doc_ids"].tolist()):
        np.testing.assert_array_equal(ids[cu[k]:cu[k + 1]], ds[doc_id]["input_ids"].astype(np.int64))
    clean_shm()


def test_a_70k_vocabulary_model_trains_on_uint32_shards(tmp_path, wide):
    cfg = run_config(tmp_path, wide["out"], model=model_overrides(vocab=VOCAB), max_duration="8ba", optimizer={"lr": 1e-2})
    cfg["data"].update(max_seq_len=64, microbatch_size=4, global_batch_size=4)
    build_and_fit(cfg)
    train = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    first, last = train[0]["loss/train/total"], train[-1]["loss/train/total"]
    assert first == pytest.approx(np.log(VOCAB), abs=0.5)  # random init: ~uniform over 70,000 ids
    print("uint32 run: first loss", first, "last", last)
    assert last < first - 2.0, (first, last)
