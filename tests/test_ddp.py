"""`composer -n 2 train.py configs/tiny.yaml` trains two gloo ranks on CPU: the ranks read disjoint
data, and stopping + autoresuming gives the same documents per step, weights and losses."""

import os
import time

import pytest
import torch

from test_train_fixtures import (COMPOSER, DIST_TIMEOUTS, ROOT, ProcessGroup, as_node, free_port, gave_up,
                                 lost_rendezvous, read_jsonl, retried, run_group, train_py)

TINY = os.path.join(ROOT, "configs", "tiny.yaml")


def launch(data, run_dir, batches, extra=()):
    args = [TINY, f"data.local={data}", f"run_dir={run_dir}", f"max_duration={batches}ba", "eval_interval=2ba",
            "eval_subset_num_batches=2", "save_interval=2ba", "callbacks.audit_doc_ids=true",
            "data.batch_size_warmup_tokens=3000", "loggers.console=false", *extra]
    proc = train_py(args, launcher=2, timeout=300)  # every rank ended on return; a lost rendezvous retried
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["returns", "hangs"])
def test_a_launch_ends_every_process_it_started(tmp_path, how):
    """What a launcher starts (here a shell's background sleep, as composer starts its ranks) is
    ended when the launch returns, and when it runs past its timeout (then it fails saying so)."""
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; " + ("sleep 300" if how == "hangs" else "exit 0")
    if how == "hangs":
        with pytest.raises(AssertionError, match="ran past 3 s; every process it started was ended"):
            run_group(["sh", "-c", script], timeout=3)
    else:
        assert run_group(["sh", "-c", script], timeout=60).returncode == 0
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10  # an orphan killed is reaped by init a moment later
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), f"process {child} outlived the launch"


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_after_the_same_batch(tmp_path, data, reference):
    """A signal reaching only rank 1 stops both ranks after the same batch with one checkpoint, and
    the resumed run equals the uninterrupted one: the reference's documents at every step on both
    ranks (nothing replayed, nothing skipped), its losses and, bit for bit, its weights.  (The
    suite's one two-rank resume: a stop by max_duration then a longer rerun is the same resume,
    tested on one rank in test_resume.py.)"""
    import signal

    import psutil

    run_dir = tmp_path / "preempted"
    args = [TINY, f"data.local={data}", f"run_dir={run_dir}", "max_duration=4ba", "eval_interval=2ba",
            "eval_subset_num_batches=2", "save_interval=2ba", "callbacks.audit_doc_ids=true",
            "data.batch_size_warmup_tokens=3000", "loggers.console=false"]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    first = run_dir / "checkpoints" / "ba2.pt"
    tried = []
    for dist_timeout in DIST_TIMEOUTS:
        port = free_port()
        cmd = [COMPOSER, "-n", "2", "--master_port", str(port), os.path.join(ROOT, "train.py"), *args,
               f"dist_timeout={dist_timeout}"]
        (tmp_path / f"node-tmp-{port}").mkdir()
        cmd, env = as_node(cmd, env, str(tmp_path / f"node-tmp-{port}"))  # apart from parallel test workers' launches
        with ProcessGroup(cmd, env=env) as launcher:  # every rank ended when the block is left, whatever happened
            t0 = time.time()
            while not first.exists() and not launcher.exited():
                assert time.time() - t0 < 600 + dist_timeout, "no checkpoint after 600 s past the rendezvous timeout"
                time.sleep(0.05)
            if not first.exists():  # the launcher ended before the first checkpoint
                err = launcher.output()[1]
                assert lost_rendezvous(err), err[-3000:]
                tried.append(f"port {port}, dist_timeout {dist_timeout} s")
                retried(tried[-1])
                continue  # a rendezvous lost to a busy machine: a fresh port, a longer timeout
            rank1 = [p for p in psutil.Process(launcher.pid).children() if p.environ().get("RANK") == "1"]
            assert len(rank1) == 1
            rank1[0].send_signal(signal.SIGTERM)
            assert launcher.wait(300), "the ranks did not stop within 300 s of the signal"
            returncode = launcher.end()
            err = launcher.output()[1]
        break
    else:
        raise AssertionError(gave_up(2, tried, err))
    # the first rank to exit reports 143; the launcher then stops the other (143 or -15, by timing)
    assert returncode != 0 and "exit code 143" in err.replace("exited with code", "exit code"), err[-3000:]
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
    loss = lambda d: [r["loss/train/total"] for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "train"]  # noqa: E731
    assert loss(run_dir) == loss(reference)


@pytest.mark.slow
def test_two_ranks_distil_from_a_teacher(tmp_path, data, reference):
    """teacher: each rank holds the frozen teacher (no DDP wrapper, no checkpoint entry); the loss
    terms are logged as the ranks' mean."""
    run_dir = tmp_path / "distilled"
    launch(data, run_dir, 2, [f"teacher.model={reference}", "teacher.temperature=2.0", "model.num_hidden_layers=2"])
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["batch"] for r in recs] == [1, 2] and all(r["loss/train/kl"] > 0 for r in recs)
    for r in recs:  # total = (1 - 0.5) CE + 0.5 T^2 KL, rank means of each
        assert r["loss/train/total"] == pytest.approx(0.5 * r["loss/train/ce"] + 2.0 * r["loss/train/kl"], rel=1e-4)
    state = torch.load(run_dir / "checkpoints" / "ba2.pt", map_location="cpu", weights_only=False)["state"]["model"]
    assert not any("teacher" in k for k in state)


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
