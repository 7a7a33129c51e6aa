"""Sampling by document length (flexbert/data/length_buckets.py): each range's folder holds only
samples in its range, and a mixture of ranges gives the long documents their proportion."""

import os
from collections import Counter

import pytest

from data_fixtures.helpers import clean_shm


@pytest.fixture(scope="module")
def buckets(tmp_path_factory, data):
    from flexbert.data.length_buckets import split_by_length

    out = str(tmp_path_factory.mktemp("by_length") / "b")
    return out, split_by_length(data, out, [48])


def test_each_folder_holds_only_its_range_and_nothing_is_lost(buckets, data):
    import json

    from flexbert.data.fingerprint import shards_fingerprint
    from flexbert.data.length_buckets import _read_split

    out, stats = buckets
    assert sorted(stats) == ["len-0-47", "len-48-max"]
    source = json.load(open(os.path.join(data, "stats.json")))
    for split in ("train", "validation"):
        assert sum(s["splits"][split]["samples"] for s in stats.values()) == source["splits"][split]["samples"]
    for name, (lo, hi) in (("len-0-47", (0, 47)), ("len-48-max", (48, 10**9))):
        lengths = [n for _, n in _read_split(os.path.join(out, name), "train")]
        assert lengths and all(lo <= n <= hi for n in lengths)
        assert shards_fingerprint(os.path.join(out, name)) == shards_fingerprint(data)  # same tokenizer, recorded


def test_a_mixture_of_ranges_gives_long_documents_their_proportion(buckets, tmp_path_factory):
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    out, _ = buckets
    streams = {"short": {"local": os.path.join(out, "len-0-47"), "proportion": 0.7},
               "long": {"local": os.path.join(out, "len-48-max"), "proportion": 0.3}}
    cfg = DataConfig.from_dict({"streams": streams, "max_seq_len": 128, "microbatch_size": 8, "num_workers": 0,
                                "doc_batch_size": 16, "packer_buffer_size": 64, "epochs": 1, "return_doc_ids": True})
    clean_shm()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    ids = [i for batch in loader for row in batch["rows"] for i in row["doc_ids"].tolist()]
    clean_shm()
    names = Counter(loader.sources.names[k] for k in loader.sources.stream_ids(ids))
    assert abs(names["long"] / sum(names.values()) - 0.3) < 0.03, names


def test_bad_bounds_and_outputs_are_one_line(tmp_path, data, capsys):
    import runpy

    main = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "data_prep", "split_by_length.py"))["main"]
    assert main([data, "--bounds", "64", "32", "--out", str(tmp_path / "x")]) == 2
    assert "increasing token counts" in capsys.readouterr().err
    assert main([data, "--bounds", "64", "--out", os.path.join(data, "inside")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
