"""Data mixtures (``data.streams``): config validation, and Streaming's weights giving the counts
they promise: proportions per epoch, ``repeat`` passes and ``choose`` documents per stream."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from data_fixtures.helpers import clean_shm, write_doc_shards
from flexbert.config import ConfigError
from flexbert.data.stream_config import StreamConfig, load_streams
from flexbert.data.streams import StreamIndex, build_streams

SIZES = {"web": 3000, "code": 1500, "sci": 500}


def _docs(n: int, stream: int) -> list[np.ndarray]:
    """Documents whose first body token names the stream and whose second numbers the document."""
    return [np.array([2, 10 + stream, 100 + i % 100, 200 + i // 100, 3], dtype=np.int64) for i in range(n)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    out = {}
    for k, (name, n) in enumerate(SIZES.items()):
        write_doc_shards(str(root / name), _docs(n, k), size_limit=1 << 14)
        out[name] = str(root / name)
    return out


def _epoch(sources, weights: dict, epoch_size=None, seed=11, temperature=None):
    """(stream name per document of epoch 0, sample ids) read through a Streaming dataset."""
    from streaming import StreamingDataset

    class Ids(StreamingDataset):
        def get_item(self, sample_id, retry=7):
            return int(sample_id)

    cfg = load_streams({n: {"local": sources[n], **weights.get(n, {})} for n in SIZES})
    clean_shm()
    ds = Ids(streams=build_streams(cfg, "train", 60.0, temperature=temperature), epoch_size=epoch_size, shuffle=True, shuffle_seed=seed,
             batch_size=8)
    ids = list(ds)  # one rank, no workers: the whole epoch in order
    index = StreamIndex.of(ds, list(cfg))
    names = [index.names[i] for i in index.stream_ids(ids)]
    clean_shm()
    return names, ids


def test_proportions_give_exact_epoch_counts_and_mix_throughout(sources):
    names, _ = _epoch(sources, {"web": {"proportion": 0.5}, "code": {"proportion": 0.3}, "sci": {"proportion": 0.2}})
    assert Counter(names) == {"web": 2500, "code": 1500, "sci": 1000}  # epoch = 5000 documents (the total)
    # The shuffle mixes the sources: every quarter of the epoch (1,250 documents, where binomial
    # noise is ~0.013) is within 0.04 of the proportions -- the stated tolerance.
    for q in range(4):
        part = Counter(names[q * 1250:(q + 1) * 1250])
        for n, p in (("web", 0.5), ("code", 0.3), ("sci", 0.2)):
            assert abs(part[n] / 1250 - p) < 0.04, (q, n, part)


def test_epoch_size_scales_the_mixture(sources):
    names, ids = _epoch(sources, {"web": {"proportion": 1}, "code": {"proportion": 1}, "sci": {"proportion": 2}},
                        epoch_size=2000)
    assert Counter(names) == {"web": 500, "code": 500, "sci": 1000}
    sci = Counter(i for i, n in zip(ids, names) if n == "sci")
    assert sorted(set(sci.values())) == [2]  # 500 documents drawn twice each


def test_repeat_and_choose_give_expected_counts(sources):
    names, ids = _epoch(sources, {"web": {"choose": 750}, "code": {"repeat": 2}, "sci": {"repeat": 0.5}})
    c = Counter(names)
    assert c == {"web": 750, "code": 3000, "sci": 250}
    per_doc = {n: Counter(i for i, m in zip(ids, names) if m == n) for n in SIZES}
    assert set(per_doc["web"].values()) == {1} and len(per_doc["web"]) == 750  # 750 distinct of 3,000
    assert set(per_doc["code"].values()) == {2} and len(per_doc["code"]) == 1500  # each exactly twice
    assert set(per_doc["sci"].values()) == {1} and len(per_doc["sci"]) == 250


def test_unweighted_streams_read_each_document_once(sources):
    names, ids = _epoch(sources, {})
    assert Counter(names) == SIZES and len(set(ids)) == sum(SIZES.values())


@pytest.mark.parametrize("tau", [0.3, 0.7, 1.0])
def test_temperature_shares_follow_size_to_the_tau(sources, tmp_path, tau):
    """streams_temperature: each source's share of the tokens trained on is size**tau / sum."""
    import json
    import shutil

    copies = {}
    for n, folder in sources.items():
        copies[n] = str(tmp_path / n)
        shutil.copytree(folder, copies[n])
        with open(os.path.join(copies[n], "stats.json"), "w") as f:
            json.dump({"splits": {"train": {"tokens": SIZES[n] * 5}}}, f)  # 5 tokens a document
    names, _ = _epoch(copies, {}, temperature=tau)
    counts = Counter(names)
    expected = {n: (5 * size) ** tau for n, size in SIZES.items()}
    total = sum(expected.values())
    for n in SIZES:  # every document has 5 tokens: document shares are token shares
        assert abs(counts[n] / len(names) - expected[n] / total) < 0.03, (tau, n, counts)
    if tau < 1:
        assert counts["sci"] / len(names) > SIZES["sci"] / sum(SIZES.values())  # the small source is up-sampled


def test_temperature_needs_sizes_and_no_other_weights(sources):
    from flexbert.data.config import DataConfig

    with pytest.raises(ConfigError, match="stream 'web' .* has no token count"):
        build_streams(load_streams({"web": {"local": sources["web"]}}), "train", 60.0, temperature=0.5)
    with pytest.raises(ConfigError, match="data.streams.web: streams_temperature sets every stream's proportion"):
        DataConfig.from_dict({"streams": {"web": {"local": "x", "proportion": 1}}, "streams_temperature": 0.5})
    with pytest.raises(ConfigError, match="data.streams_temperature: a temperature in \\[0, 1\\]"):
        DataConfig.from_dict({"streams": {"web": {"local": "x"}}, "streams_temperature": 1.5})


def test_stream_index_counts_tokens_per_source():
    idx = StreamIndex(["a", "b", "c"], np.array([0, 10, 15]))
    assert idx.stream_ids([0, 9, 10, 14, 15, 99]).tolist() == [0, 0, 1, 1, 2, 2]
    assert idx.tokens_per_stream([1, 12, 13, 20], [5, 7, 1, 100]).tolist() == [5, 8, 100]


@pytest.mark.parametrize("streams, message", [
    ({"web": {"local": "x", "proportion": 0.5}, "code": {"local": "y"}}, "data.streams.code: give every stream a proportion or none"),
    ({"web": {"local": "x", "repeat": 2, "choose": 3}}, "data.streams.web.choose: a stream takes at most one of"),
    ({"web": {"remote": "s3://b/w", "proportion": 0}}, "data.streams.web.proportion: must be > 0"),
    ({"web": {"proportion": 1}}, "data.streams.web.local: set the folder"),
    ({"web": {"local": "x", "propotion": 1}}, "unknown config key 'data.streams.web.propotion' (did you mean 'proportion'?)"),
    ({"a b": {"local": "x"}}, "data.streams.a b: stream names are letters"),
])
def test_bad_streams_fail_in_one_line_naming_the_key(streams, message):
    with pytest.raises(ConfigError) as e:
        load_streams(streams)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_stream_config_round_trips():
    cfg = load_streams({"web": {"remote": "s3://b/web", "local": "/c/web", "proportion": 0.7}})
    assert cfg == {"web": StreamConfig(local="/c/web", remote="s3://b/web", proportion=0.7)}
    assert load_streams(cfg) == cfg
    assert os.path.basename(cfg["web"].local) == "web"


def test_loader_trains_on_the_mixture_and_counts_tokens_per_source(sources, tmp_path_factory):
    """Through the packed loader: one epoch of repeat/choose weights gives exactly the documents
    promised, and the tokens per source are the documents' tokens."""
    from data_fixtures.helpers import small_tokenizer_dir
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    streams = {"web": {"local": sources["web"], "choose": 750}, "code": {"local": sources["code"], "repeat": 2},
               "sci": {"local": sources["sci"], "repeat": 0.5}}
    cfg = DataConfig.from_dict({"streams": streams, "tokenizer": small_tokenizer_dir(tmp_path_factory), "max_seq_len": 8,
                                "microbatch_size": 16, "num_workers": 0, "doc_batch_size": 8, "packer_buffer_size": 64,
                                "epochs": 1, "return_doc_ids": True})
    clean_shm()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    ids = [i for batch in loader for row in batch["rows"] for i in row["doc_ids"].tolist()]
    clean_shm()
    names = [loader.sources.names[k] for k in loader.sources.stream_ids(ids)]
    assert Counter(names) == {"web": 750, "code": 3000, "sci": 250}
    assert loader.tokens_per_source() == {"web": 750 * 5, "code": 3000 * 5, "sci": 250 * 5}  # 5 tokens a document


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, data):
    """The session's documents split in two MDS data sets (same tokenizer): sources 'a' and 'b'."""
    import json

    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from test_train_fixtures import documents

    root, docs, out = tmp_path_factory.mktemp("two_sources"), documents(), {}
    for name, part in (("a", docs[: len(docs) // 2]), ("b", docs[len(docs) // 2 :])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
        out[name] = str(root / name)
        tokenize_to_mds([str(root / f"{name}.jsonl")], os.path.join(data, "tokenizer"), out[name],
                        ShardOptions(max_seq_len=128, val_fraction=0.05, progress=False, size_limit="256kb"))
    return out


def test_training_logs_tokens_and_an_eval_loss_per_source(tmp_path, data, two_sources):
    from test_train_fixtures import build_and_fit, read_jsonl, run_config

    cfg = run_config(tmp_path, data, max_duration="8ba", eval_interval="4ba")
    cfg["data"].update(local="", tokenizer=os.path.join(data, "tokenizer"),
                       streams={"a": {"local": two_sources["a"], "proportion": 0.75},
                                "b": {"local": two_sources["b"], "proportion": 0.25}})
    build_and_fit(cfg)
    recs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    a = [r["data/tokens/a"] for r in recs]
    b = [r["data/tokens/b"] for r in recs]
    assert a == sorted(a) and b == sorted(b) and b[-1] > 0  # running totals
    assert 1.5 < a[-1] / b[-1] < 6.0, (a[-1], b[-1])  # 3:1 by proportion (about 80 documents: loose)
    last = recs[-1]
    for label in ("eval", "eval_a", "eval_b"):  # the mixture and one loss per source
        assert 0 < last[f"metrics/{label}/MLMLoss"] < 10, label
    assert last["metrics/eval_a/MLMLoss"] != last["metrics/eval_b/MLMLoss"]


def test_a_lost_shared_memory_race_is_retried(sources, tmp_path_factory, monkeypatch):
    """Two runs starting together on one machine (a parallel sweep) can pick the same Streaming
    shared-memory prefix; the one that loses the race gets FileExistsError and tries again."""
    import streaming.base.shared.prefix as prefix

    from data_fixtures.helpers import small_tokenizer_dir
    from flexbert.data.config import DataConfig
    from flexbert.data.streams import build_dataset

    real, lost = prefix.SharedMemory, []

    def racing(name, create=False, size=0, *a, **kw):
        if create and name.endswith("_locals") and len(lost) < 2:  # another process got there first, twice
            lost.append(name)
            raise FileExistsError(17, "File exists", name)
        return real(name, create, size, *a, **kw)

    monkeypatch.setattr(prefix, "SharedMemory", racing)
    cfg = DataConfig.from_dict({"local": sources["sci"], "tokenizer": small_tokenizer_dir(tmp_path_factory),
                                "max_seq_len": 8, "num_workers": 0})
    clean_shm()
    ds = build_dataset(cfg, "train", shuffle=False, seed=0, rank=0, world_size=1)
    assert len(lost) == 2 and len(list(ds)) == SIZES["sci"]
    clean_shm()


def test_a_temperature_mixture_trains_through_flexbert_train_and_evaluates_per_source(tmp_path, data, two_sources, capsys):
    """data.streams_temperature with per-stream evaluation on (the default): `flexbert train` trains
    and logs one eval loss per source.  The per-source eval configs once kept the temperature
    without the streams and every such run stopped at start-up."""
    import yaml

    from flexbert.cli import train
    from test_train_fixtures import read_jsonl, run_config

    cfg = run_config(tmp_path, data, max_duration="2ba", eval_interval="2ba", eval_subset_num_batches=1)
    cfg["data"].update(local="", tokenizer=os.path.join(data, "tokenizer"), streams_temperature=0.5,
                       streams={"a": {"local": two_sources["a"]}, "b": {"local": two_sources["b"]}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    clean_shm()
    assert train.main([str(tmp_path / "run.yaml")]) == 0, capsys.readouterr().err
    clean_shm()
    last = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "metrics/eval_a/MLMLoss" in r][-1]
    assert last["batch"] == 2 and last["data/tokens/a"] > 0 and last["data/tokens/b"] > 0
    for label in ("eval", "eval_a", "eval_b"):
        assert 0 < last[f"metrics/{label}/MLMLoss"] < 10, label


def test_two_launchers_racing_for_shared_memory_stop_in_one_line(sources, tmp_path_factory, monkeypatch):
    """When the race cannot be retried (a rank of a multi-rank run, whose peers pick the prefix in
    lock step; here a lone process that lost it every time) the loser says what happened in one
    line instead of a bare FileExistsError."""
    import streaming.base.shared.prefix as prefix

    from data_fixtures.helpers import small_tokenizer_dir
    from flexbert.data import streams
    from flexbert.data.config import DataConfig

    real, lost = prefix.SharedMemory, []

    def taken(name, create=False, size=0, *a, **kw):
        if create and name.endswith("_locals"):
            lost.append(name)
            raise FileExistsError(17, "File exists", name)
        return real(name, create, size, *a, **kw)

    monkeypatch.setattr(prefix, "SharedMemory", taken)
    monkeypatch.setattr(streams._jitter, "uniform", lambda a, b: 0.0)
    cfg = DataConfig.from_dict({"local": sources["sci"], "tokenizer": small_tokenizer_dir(tmp_path_factory),
                                "max_seq_len": 8, "num_workers": 0})
    clean_shm()
    with pytest.raises(streams.SharedMemoryTaken, match="was taken by another launcher on this machine \\(two launchers "
                                                        "on one node\\): start a second run a few seconds after the first"):
        streams.build_dataset(cfg, "train", shuffle=False, seed=0, rank=0, world_size=1)
    assert len(lost) == 6  # retried as long as a lone process may
    clean_shm()
