"""Two nodes on one machine: two `composer` launchers (`--node_rank 0/1`, two gloo ranks each, world
size 4) on loopback train a run, which then resumes on one node with two ranks; the document audit
shows every document of the epoch trained exactly once (docs/training.md, "Multi-node launches").

Each "node" runs in its own mount namespace with a private /dev/shm and its own TMPDIR, as a real
node has: Streaming coordinates the ranks of a node through shared memory and temp-dir file locks,
and two nodes sharing one /dev/shm would register the same names (FileExistsError)."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from test_elastic import N_DOCS, _args, _run, shards  # noqa: F401  (the module's shard fixture)
from test_train_fixtures import (COMPOSER, DIST_TIMEOUTS, ROOT, ProcessGroup, as_node, free_port, gave_up,
                                 lost_rendezvous, private_shm_works, read_jsonl, retried)


pytestmark = pytest.mark.skipif(not private_shm_works(),
                                reason="needs `unshare -rm` (user + mount namespaces) for a private /dev/shm per node")


def _node(rank: int, port: int, args: list[str], tmp) -> ProcessGroup:
    """One node: a composer launcher for global ranks 2*rank, 2*rank+1, in its own /dev/shm and
    TMPDIR, in a process group of its own (ended whole when the node is left)."""
    tmpdir = tmp / f"node{rank}-tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    if rank == 0:  # the SLURM-style launch of docs/training.md: flags
        where = ["--world_size", "4", "--node_rank", "0", "--master_addr", "127.0.0.1", "--master_port", str(port)]
    else:  # the environment a scheduler sets (Kubernetes' PyTorchJob, torchrun-style): variables
        where = []
        env.update(WORLD_SIZE="4", NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    launcher = [COMPOSER, "-n", "2", *where, os.path.join(ROOT, "train.py"), *args]
    return ProcessGroup(*as_node(launcher, env, str(tmpdir)), cwd=ROOT)


def _two_nodes(args: list[str], tmp) -> None:
    """Both nodes to the end; every rank of both ended on return, failure or timeout; a lost
    rendezvous retried with a fresh port and a longer dist_timeout, and said when given up."""
    tried = []
    for dist_timeout in DIST_TIMEOUTS:
        port = free_port()
        nodes = []
        try:
            for r in (1, 0):  # the second node first: it waits for rank 0
                nodes.append(_node(r, port, [*args, f"dist_timeout={dist_timeout}"], tmp))
            for node in nodes:
                assert node.wait(400 + dist_timeout), f"a node ran past {400 + dist_timeout} s; every rank was ended"
            results = [(node.end(), node.output()[1]) for node in nodes]
        finally:
            for node in nodes:
                node.__exit__(None, None, None)
        if all(rc == 0 for rc, _ in results):
            return
        errors = "".join(err for _, err in results)
        if not lost_rendezvous(errors):
            pytest.fail("\n".join(f"node {1 - i}: rc {rc}\n{err[-3000:]}" for i, (rc, err) in enumerate(results)))
        tried.append(f"port {port}, dist_timeout {dist_timeout} s")
        retried(tried[-1])
    pytest.fail(gave_up(4, tried, errors))


@pytest.mark.slow
def test_two_nodes_then_one_node_train_each_document_once(tmp_path, shards):  # noqa: F811
    run_dir = tmp_path / "run"
    _two_nodes(_args(shards, run_dir, "3ba"), tmp_path)  # world size 4 over two launchers
    steps = {r: read_jsonl(run_dir / "doc_ids" / f"rank{r}.jsonl") for r in range(4)}
    for r in range(4):  # both nodes' ranks trained every step
        assert [s["batch"] for s in steps[r]] == [1, 2, 3], r
    first = [set(i for s in steps[r] for i in s["doc_ids"]) for r in range(4)]
    assert all(first) and sum(map(len, first)) == len(set().union(*first)), "two ranks read the same document"
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "ba3.pt", map_location="cpu", weights_only=False)
    assert ckpt["state"]["callbacks"]["ExactResume"]["world_size"] == 4  # the checkpoint knows its 4 ranks

    _run(_args(shards, run_dir, "1000ba"), launcher=2)  # one node, two ranks: to the end of the epoch
    steps = {r: read_jsonl(run_dir / "doc_ids" / f"rank{r}.jsonl") for r in range(4)}
    assert [s["batch"] for s in steps[2]] == [1, 2, 3]  # ranks 2, 3 did not run again
    later = [s for r in (0, 1) for s in steps[r] if s["batch"] > 3]
    assert later, "the resumed run trained nothing"
    seen = Counter(i for r in range(4) for s in steps[r] for i in s["doc_ids"])
    assert sorted(seen) == list(range(N_DOCS)), f"missing: {sorted(set(range(N_DOCS)) - set(seen))[:20]}"
    assert set(seen.values()) == {1}, f"repeated: {[i for i, n in seen.items() if n > 1][:20]}"
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert recs[-1]["batch"] > 3
