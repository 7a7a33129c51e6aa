"""`composer -n 2 train.py configs/tiny.yaml` trains two gloo ranks on CPU: the ranks read disjoint
data, and stopping + autoresuming gives the same documents per step, weights and losses."""

import os

import pytest
import torch

from test_train_fixtures import ROOT, read_jsonl, train_py

TINY = os.path.join(ROOT, "configs", "tiny.yaml")


def launch(data, run_dir, batches):
    args = [TINY, f"data.local={data}", f"run_dir={run_dir}", f"max_duration={batches}ba", "eval_interval=2ba",
            "eval_subset_num_batches=2", "save_interval=2ba", "callbacks.audit_doc_ids=true",
            "data.batch_size_warmup_tokens=3000", "loggers.console=false"]
    for attempt in range(3):
        proc = train_py(args, launcher=2, timeout=300)
        # The launcher picks a free port that rank 0 binds seconds later; on a machine where other
        # jobs also start process groups the port can be taken meanwhile and the rendezvous fails
        # before any training.  That is the machine, not FlexBERT: try again.
        if proc.returncode == 0 or "DistNetworkError" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _data_of(run_dir) -> str:
    import yaml

    return yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))["data"]["local"]


def doc_ids(run_dir, rank):
    return [(s["batch"], s["doc_ids"]) for s in read_jsonl(os.path.join(run_dir, "doc_ids", f"rank{rank}.jsonl"))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    launch(data, run_dir, 4)
    return run_dir


def test_two_ranks_tiny_config_disjoint_data(reference):
    ids = {}
    for rank in (0, 1):
        steps = doc_ids(reference, rank)
        assert [b for b, _ in steps] == [1, 2, 3, 4]
        ids[rank] = [i for _, d in steps for i in d]
        assert ids[rank]
    assert not set(ids[0]) & set(ids[1]), "ranks trained on the same documents"
    recs = [r for r in read_jsonl(reference / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["batch"] for r in recs] == [1, 2, 3, 4]
    assert "metrics/eval/MLMLoss" in recs[-1]
    # tokens are the real tokens of both ranks' documents (the audit's sample ids, their lengths in
    # the shards): one rank's count alone is about half and fails
    from streaming import StreamingDataset

    from data_fixtures.helpers import clean_shm

    clean_shm()
    shards = StreamingDataset(local=_data_of(reference), split="train", shuffle=False, batch_size=1)
    per_rank = [sum(int(shards[i]["length"]) for i in ids[r]) for r in (0, 1)]
    clean_shm()
    assert recs[-1]["tokens"] == sum(per_rank) and min(per_rank) > 0
    assert os.path.exists(reference / "checkpoints" / "ba4.pt")


def test_two_ranks_resume_equals_uninterrupted(tmp_path, data, reference):
    run_dir = tmp_path / "split"
    launch(data, run_dir, 2)
    launch(data, run_dir, 4)  # autoresume from ba2 on both ranks
    for rank in (0, 1):  # the same documents at every step: nothing replayed, nothing skipped
        assert doc_ids(run_dir, rank) == doc_ids(reference, rank)
    a = torch.load(reference / "checkpoints" / "ba4.pt", map_location="cpu", weights_only=False)["state"]["model"]
    b = torch.load(run_dir / "checkpoints" / "ba4.pt", map_location="cpu", weights_only=False)["state"]["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    loss = lambda d: [r["loss/train/total"] for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "train"]  # noqa: E731
    assert loss(run_dir) == loss(reference)


def test_sigterm_to_one_rank_stops_both_after_the_same_batch(tmp_path, data, reference):
    """A signal reaching only rank 1 stops both ranks after the same batch with one checkpoint, and
    the resumed run trains on the reference's documents at every step with its weights."""
    import signal
    import subprocess
    import time

    import psutil

    from test_train_fixtures import PY

    run_dir = tmp_path / "preempted"
    args = [TINY, f"data.local={data}", f"run_dir={run_dir}", "max_duration=4ba", "eval_interval=2ba",
            "eval_subset_num_batches=2", "save_interval=2ba", "callbacks.audit_doc_ids=true",
            "data.batch_size_warmup_tokens=3000", "loggers.console=false"]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    launcher = subprocess.Popen([os.path.join(os.path.dirname(PY), "composer"), "-n", "2",
                                 os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_dir / "checkpoints" / "ba2.pt"
    t0 = time.time()
    while not first.exists():
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.time() - t0 < 300, "no checkpoint after 300 s"
        time.sleep(0.05)
    rank1 = [p for p in psutil.Process(launcher.pid).children() if p.environ().get("RANK") == "1"]
    assert len(rank1) == 1
    rank1[0].send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=300)
    # the first rank to exit reports 143; the launcher then stops the other (143 or -15, by timing)
    assert launcher.returncode != 0 and "exit code 143" in err.replace("exited with code", "exit code"), err[-3000:]
    assert "stopped by SIGTERM after batch" in err, err[-3000:]
    stops = {r: max(b for b, _ in doc_ids(run_dir, r)) for r in (0, 1)}
    assert stops[0] == stops[1] and 2 <= stops[0] < 4, stops  # both ranks stopped after one batch
    assert os.path.realpath(run_dir / "checkpoints" / "latest.pt").endswith(f"ba{stops[0]}.pt")

    launch(data, run_dir, 4)  # autoresume from the stopping batch
    for rank in (0, 1):
        assert doc_ids(run_dir, rank) == doc_ids(reference, rank)
    a = torch.load(reference / "checkpoints" / "ba4.pt", map_location="cpu", weights_only=False)["state"]["model"]
    b = torch.load(run_dir / "checkpoints" / "ba4.pt", map_location="cpu", weights_only=False)["state"]["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_rank_whose_peers_never_come_stops_in_one_line_after_dist_init_timeout(tmp_path, data):
    """Rank 0 of 2 started alone (its peer died before the rendezvous, or torchrun's workers never
    met): one line naming the rendezvous and what to run instead, exit 2, the run folder's lock given
    back, nothing trained - not 300 silent seconds."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", NODE_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), TORCHELASTIC_RUN_ID="test")  # what torchrun sets for its workers
    run_dir = tmp_path / "run"
    r = train_py([TINY, f"data.local={data}", f"run_dir={run_dir}", "max_duration=2ba", "dist_init_timeout=5"], env=env)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[-1] == (f"[rank 0] error: the 2 ranks did not all meet within 5 s (rendezvous at 127.0.0.1:{port}, this is "
                         "rank 0 on node 0): a rank died before it or was never started (see the other ranks' and nodes' "
                         "logs), or another run's launcher holds this port; dist_init_timeout waits longer; on CPU launch "
                         "with `composer -n 2 train.py ...` instead of torchrun")
    assert not os.path.exists(run_dir / ".lock") and not os.path.exists(run_dir / "checkpoints")
