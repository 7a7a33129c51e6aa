"""Object storage against a real S3 API on loopback (moto server mode): tokenize_to_mds uploads,
Streaming reads back, unreachable stores fail in one line naming the URL, the server cleans up."""

from __future__ import annotations

import filecmp
import os
import socket
import sys

import numpy as np
import pytest

from data_fixtures.helpers import clean_shm, sentences, small_tokenizer_dir
from s3_fixture import MotoServer, moto_server, s3  # noqa: F401 -- fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "data_prep"))

import tokenize_to_mds as cli  # noqa: E402


def _corpus(tmp_path, n=400) -> str:
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(sentences(n, seed=3)) + "\n")
    return str(p)


def _args(corpus, tok, out, *extra):
    return ["--input", corpus, "--tokenizer", tok, "--out", out, "--max-seq-len", "32", "--workers", "1",
            "--val-fraction", "0.1", "--shard-size", "2kb", "--no-progress", *extra]


def test_tokenize_to_s3_uploads_the_same_dataset_as_a_local_run(tmp_path, tmp_path_factory, s3):
    tok, corpus = small_tokenizer_dir(tmp_path_factory), _corpus(tmp_path)
    local = str(tmp_path / "local")
    assert cli.main(_args(corpus, tok, local)) == 0
    url = s3.url("data", "v1")
    assert cli.main(_args(corpus, tok, url)) == 0

    want = sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs)
    assert len([w for w in want if w.startswith("train/shard.")]) > 3  # several shards went up one by one
    assert s3.keys("data/v1/") == ["data/v1/" + w for w in want]
    client, down = s3.client(), tmp_path / "down"
    for rel in want:
        if rel == "stats.json":
            continue  # holds timings
        dst = down / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(s3.name, f"data/v1/{rel}", str(dst))
        assert filecmp.cmp(dst, os.path.join(local, rel), shallow=False), rel

    # Streaming reads the uploaded split back: the same documents in the same order
    from streaming import StreamingDataset

    clean_shm()
    remote_ds = StreamingDataset(remote=url, local=str(tmp_path / "cache"), split="train", shuffle=False, batch_size=1)
    local_ds = StreamingDataset(local=local, split="train", shuffle=False, batch_size=1)
    assert remote_ds.num_samples == local_ds.num_samples > 100
    for i in (0, 7, remote_ds.num_samples - 1):
        np.testing.assert_array_equal(remote_ds[i]["input_ids"], local_ds[i]["input_ids"])
    clean_shm()


def test_non_empty_prefix_needs_overwrite(tmp_path, tmp_path_factory, s3, capsys):
    tok, corpus = small_tokenizer_dir(tmp_path_factory), _corpus(tmp_path, 50)
    url = s3.url("ds")
    s3.client().put_object(Bucket=s3.name, Key="ds/stale.txt", Body=b"x")
    assert cli.main(_args(corpus, tok, url)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {url}: output prefix is not empty; pass --overwrite to write over it"
    assert cli.main(_args(corpus, tok, url, "--overwrite")) == 0
    assert "ds/stats.json" in s3.keys("ds/")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("problem", ["no_server", "no_bucket"])
def test_unreachable_store_is_one_line_naming_the_url(tmp_path, tmp_path_factory, s3, monkeypatch, capsys, problem):
    tok, corpus = small_tokenizer_dir(tmp_path_factory), _corpus(tmp_path, 50)
    if problem == "no_server":
        monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
        url = s3.url("x")
    else:
        url = "s3://flexbert-no-such-bucket/x"
    assert cli.main(_args(corpus, tok, url)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {url}: cannot reach the object store"), err
    assert ("EndpointConnectionError" if problem == "no_server" else "NoSuchBucket") in err


def test_moto_server_stops_and_frees_its_port():
    pytest.importorskip("moto.server")
    server = MotoServer()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
