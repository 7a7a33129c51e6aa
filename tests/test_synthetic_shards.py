"""flexbert synthetic-shards (flexbert/data/synthetic.py): the paper's length distributions, real MDS shards with the
tokenizer beside them, and the training loader reading them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_fixtures.helpers import small_tokenizer_dir

from flexbert.cli.synthetic_shards import main
from flexbert.data.synthetic import chunk, draw_lengths, write_synthetic


def test_length_distributions_have_the_papers_statistics():
    rng = np.random.default_rng(0)
    pre = draw_lengths("pretrain", 20000, rng)
    assert abs(np.median(pre) - 460) < 15 and (pre > 1024).mean() > 0.1  # a real tail past the row length
    n256 = draw_lengths("normal256", 20000, rng)
    assert abs(n256.mean() - 256) < 2 and abs(n256.std() - 64) < 2 and n256.min() >= 16 and n256.max() <= 512
    n4k = draw_lengths("normal4096", 20000, rng)
    assert abs(n4k.mean() - 4096) < 30 and abs(n4k.std() - 1024) < 30 and n4k.min() >= 16 and n4k.max() <= 8192
    assert set(draw_lengths("fixed512", 10, rng)) == {512} and set(draw_lengths("fixed8192", 3, rng)) == {8192}


def test_chunking_matches_tokenize_to_mds():
    assert chunk(1024, 1024, 2) == [1024]
    assert chunk(1025, 1024, 2) == [1024, 3]  # the body's 1023 tokens: 1022 + 1, each wrapped
    assert sum(c - 2 for c in chunk(5000, 1024, 2)) == 4998 and max(chunk(5000, 1024, 2)) == 1024


def test_written_shards_read_back_and_train_loader_packs_them(tmp_path_factory, tmp_path):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader
    from flexbert.data.tokenizer import SpecialTokens, load_tokenizer

    tok_dir = small_tokenizer_dir(tmp_path_factory)
    out = str(tmp_path / "syn")
    stats = write_synthetic(tok_dir, out, "pretrain", 256, documents=1500, seed=3, val_fraction=0.05)
    assert os.path.isfile(os.path.join(out, "tokenizer", "tokenizer.json"))
    assert stats == json.load(open(os.path.join(out, "stats.json")))
    syn = stats["synthetic"]
    assert abs(syn["document_length_median"] - 460) < 40 and stats["documents_chunked"] > 500
    assert stats["splits"]["validation"]["documents"] > 30

    special = SpecialTokens.from_tokenizer(load_tokenizer(tok_dir))
    clean_stale_shared_memory()
    ds = StreamingDataset(local=os.path.join(out, "train"), shuffle=False, batch_size=1)
    lengths = []
    for i in range(ds.num_samples):
        ids = np.asarray(ds[i]["input_ids"], dtype=np.int64)
        assert ids[0] == special.cls_id and ids[-1] == special.sep_id and len(ids) == ds[i]["length"] <= 256
        body = ids[1:-1]
        assert not np.isin(body, special.special_ids).any()  # random ids never hit a special token
        lengths.append(len(ids))
    assert sum(lengths) == stats["splits"]["train"]["tokens"]
    del ds

    clean_stale_shared_memory()
    cfg = DataConfig(local=out, max_seq_len=256, microbatch_size=4, global_batch_size=8, num_workers=0)
    batch = next(iter(build_train_loader(cfg, seed=0, rank=0, world_size=1)))
    assert len(batch["rows"]) == 2 and all(r["input_ids"].numel() == 1024 for r in batch["rows"])


def test_cli_errors_are_one_line(tmp_path_factory, tmp_path, capsys):
    tok_dir = small_tokenizer_dir(tmp_path_factory)
    assert main(["--tokenizer", tok_dir, "--out", str(tmp_path / "a")]) == 2
    assert "give --documents or --tokens" in capsys.readouterr().err
    assert main(["--tokenizer", tok_dir, "--out", str(tmp_path / "b"), "--tokens", "20k", "--lengths", "normal256"]) == 0
    assert main(["--tokenizer", tok_dir, "--out", str(tmp_path / "b"), "--tokens", "20k"]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--tokenizer", tok_dir, "--out", str(tmp_path / "c"), "--tokens", "1k", "--lengths", "zipf"])
