"""Training from object storage (a real S3 API on loopback, moto server mode): remote shards train
exactly like local ones, a resume mid-epoch refetches from the store, and a cache smaller than the
data set evicts and refetches shards without losing or repeating a document."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest
import torch

from data_fixtures.helpers import clean_shm
from flexbert.data.remote import upload_tree
from s3_fixture import moto_server, s3  # noqa: F401 -- fixtures
from test_train_fixtures import build_and_fit, documents, read_jsonl, run_config


def _losses(run_dir) -> dict:
    return {r["batch"]: r["loss/train/total"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
            if r["kind"] == "train"}


def _doc_ids(run_dir) -> dict:
    return {r["batch"]: r["doc_ids"] for r in read_jsonl(os.path.join(run_dir, "doc_ids", "rank0.jsonl"))}


def _cfg(tmp_path, name, data, steps, **data_kw):
    cfg = run_config(tmp_path, data, run_dir=str(tmp_path / name), max_duration=f"{steps}ba", save_interval="2ba",
                     callbacks={"throughput": True, "audit_doc_ids": True})
    cfg["data"].update(data_kw)
    return cfg


def test_remote_training_and_mid_epoch_resume_equal_a_local_run(tmp_path, data, s3):
    url = s3.url("pretrain")
    upload_tree(data, url)
    build_and_fit(_cfg(tmp_path, "local", data, 8))

    cache = tmp_path / "cache"
    remote = dict(local=str(cache), remote=url)
    build_and_fit(_cfg(tmp_path, "remote", "", 4, **remote))  # the run stops mid-epoch at batch 4
    assert os.path.isfile(cache / "tokenizer" / "tokenizer.json")  # fetched from <remote>/tokenizer
    fetched = s3.gets("pretrain/train/shard.")
    assert fetched and all(os.path.isfile(cache / "train" / os.path.basename(k)) for k in fetched)
    shutil.rmtree(cache)  # a fresh machine: the resumed run must fetch everything again
    build_and_fit(_cfg(tmp_path, "remote", "", 8, **remote))  # autoresume from ba4
    assert s3.gets("pretrain/train/shard.") != fetched  # shards were fetched again

    local, rem = tmp_path / "local", tmp_path / "remote"
    assert sorted(_losses(rem)) == list(range(1, 9))
    assert _losses(rem) == _losses(local)  # bit for bit
    assert _doc_ids(rem) == _doc_ids(local)  # the same documents at every step: none skipped or replayed
    a = torch.load(local / "checkpoints" / "ba8.pt", map_location="cpu", weights_only=False)["state"]["model"]
    b = torch.load(rem / "checkpoints" / "ba8.pt", map_location="cpu", weights_only=False)["state"]["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.fixture
def small_shards(tmp_path, tmp_path_factory, s3):
    """~30 shards of 8 KB in the bucket, written by tokenize_to_mds --out s3://..."""
    import json

    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    docs = documents()[:1500]
    tok = str(tmp_path / "tok")
    save_tokenizer(train_bpe(docs, vocab_size=1024, min_frequency=2), tok)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    url = s3.url("small")
    stats = tokenize_to_mds([str(corpus)], tok, url, ShardOptions(max_seq_len=128, val_fraction=0.0, progress=False,
                                                                 size_limit="8kb"))
    return url, stats


def test_cache_smaller_than_the_data_evicts_and_refetches(tmp_path, s3, small_shards):
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    url, stats = small_shards
    shard_keys = [k for k in s3.keys("small/train/") if "/shard." in k]
    sizes = [s3.client().head_object(Bucket=s3.name, Key=k)["ContentLength"] for k in shard_keys]
    limit = 4 * max(sizes) + 4096  # Streaming's floor is four of the largest shards (+ the index)
    assert len(shard_keys) >= 20 and sum(sizes) > 4 * limit  # the data set is far bigger than the cache

    # Unshuffled, so that a shard is read start to end and each epoch fetches each shard once: a
    # shuffle block spans many shards, and a cache smaller than those shards thrashes (docs/data.md).
    cache = tmp_path / "cache"
    cfg = DataConfig(local=str(cache), remote=url, max_seq_len=128, microbatch_size=4, num_workers=0, doc_batch_size=16,
                     packer_buffer_size=32, cache_limit=str(limit), epochs=2, return_doc_ids=True, shuffle=False)
    clean_shm()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    seen = Counter(i for batch in loader for row in batch["rows"] for i in row["doc_ids"].tolist())
    clean_shm()

    n = stats["splits"]["train"]["samples"]
    assert sorted(seen) == list(range(n)) and set(seen.values()) == {2}  # two epochs: every document twice
    on_disk = sum(os.path.getsize(cache / "train" / f) for f in os.listdir(cache / "train") if f.startswith("shard."))
    assert on_disk <= limit  # the cache never held the data set ...
    gets = s3.gets("small/train/shard.")
    assert len(gets) == len(shard_keys) and sum(gets.values()) >= 2 * len(shard_keys) - 4  # ... so shards came twice
    # and no thrashing: each shard about once per epoch (Streaming alone fetched 96-133 here: DocDataset)
    assert sum(gets.values()) <= 2.5 * len(shard_keys)


def test_training_from_an_unreachable_store_fails_in_one_line_naming_the_url(tmp_path, s3, monkeypatch, capsys):
    import socket

    from flexbert.cli.train import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    url = s3.url("nowhere")
    code = main([os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tiny.yaml"),
                 f"data.remote={url}", f"data.local={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert f"{url}/tokenizer/tokenizer.json" in err[0] and "download failed" in err[0], err[0]


def test_checkpoints_go_to_object_storage_and_a_fresh_machine_resumes_from_there(tmp_path, data, s3):
    """save_folder: s3://... uploads every checkpoint as it is written (local copies in the run
    folder); with the run folder gone, autoresume takes the newest checkpoint from the store."""
    url = s3.url("ckpts", "run")
    cfg = run_config(tmp_path, data, max_duration="4ba", save_interval="2ba", save_folder=url)
    build_and_fit(cfg)
    assert s3.keys("ckpts/run/") == ["ckpts/run/ba2.pt", "ckpts/run/ba4.pt"]
    assert sorted(os.listdir(os.path.join(cfg["run_dir"], "checkpoints"))) == ["ba2.pt", "ba4.pt", "latest.pt"]
    shutil.rmtree(cfg["run_dir"])  # a fresh machine: only the store has the run
    run = build_and_fit(dict(cfg, max_duration="6ba"))
    assert run.plan.kind == "resume" and run.plan.path == os.path.join(cfg["run_dir"], "checkpoints", "ba4.pt")
    assert s3.keys("ckpts/run/") == ["ckpts/run/ba2.pt", "ckpts/run/ba4.pt", "ckpts/run/ba6.pt"]
    assert [r["batch"] for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if r["kind"] == "train"] == [5, 6]
