"""Two nodes on one machine: two `composer` launchers (`--node_rank 0/1`, two gloo ranks each, world
size 4) on loopback train a run, which then resumes on one rank and then on two (`composer -n 2`);
the document audit shows every document of the epoch trained exactly once (docs/training.md,
"Multi-node launches"; docs/data.md, moving between rank counts).

Each "node" runs in its own mount namespace with a private /dev/shm and its own TMPDIR, as a real
node has: Streaming coordinates the ranks of a node through shared memory and temp-dir file locks,
and two nodes sharing one /dev/shm would register the same names (FileExistsError)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from test_train_fixtures import (COMPOSER, DIST_TIMEOUTS, ROOT, ProcessGroup, as_node, documents, free_port, gave_up,
                                 lost_rendezvous, private_shm_works, read_jsonl, retried, train_py)

TINY = os.path.join(ROOT, "configs", "tiny.yaml")

N_DOCS = 640  # one sample per document (truncated), a multiple of 2 ranks x doc_batch_size


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    root = tmp_path_factory.mktemp("elastic")
    docs = documents()
    save_tokenizer(train_bpe(docs, vocab_size=1024, min_frequency=2), str(root / "tok"))
    for name, part in (("train.jsonl", docs[:N_DOCS]), ("val.jsonl", docs[N_DOCS:N_DOCS + 64])):
        (root / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    out = str(root / "shards")
    stats = tokenize_to_mds([str(root / "train.jsonl")], str(root / "tok"), out,
                            ShardOptions(max_seq_len=128, val_fraction=0.0, truncate=True, progress=False,
                                         size_limit="32kb"), val_inputs=[str(root / "val.jsonl")])
    assert stats["splits"]["train"]["samples"] == N_DOCS
    return out


def _args(shards, run_dir, duration):
    return [TINY, f"data.local={shards}", f"run_dir={run_dir}", f"max_duration={duration}", "save_interval=3ba",
            "eval_interval=1000ba", "eval_subset_num_batches=1", "callbacks.audit_doc_ids=true", "data.epochs=1",
            "data.batch_size_warmup_min=0", "data.batch_size_warmup_tokens=0", "data.doc_batch_size=32",
            "model.vocab_size=1024", "loggers.console=false"]


def _run(args, launcher=None):
    # every rank ended on return; a rendezvous lost to a busy machine (a port taken, a rank starting
    # minutes late) is retried with a fresh port and a longer timeout (test_train_fixtures.launch_ranks)
    proc = train_py(args, launcher=launcher, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


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
def test_four_ranks_then_one_then_two_train_each_document_of_the_epoch_once(tmp_path, shards):
    """Stopped and resumed on another rank count twice: 4 ranks over two launchers (world size 4)
    for 3 batches, 1 rank for 3 more, then 2 ranks to the end of the epoch; every rank that ran
    trained every one of its steps, and the document audit has each document of the epoch exactly
    once. (Where `unshare -rm` is missing the first leg is one rank instead of two nodes.)"""
    run_dir = tmp_path / "run"
    nodes = private_shm_works()
    if nodes:
        _two_nodes(_args(shards, run_dir, "3ba"), tmp_path)  # world size 4 over two launchers
    else:
        _run(_args(shards, run_dir, "3ba"))
    first_ranks = range(4) if nodes else range(1)
    steps = {r: read_jsonl(run_dir / "doc_ids" / f"rank{r}.jsonl") for r in first_ranks}
    for r in first_ranks:  # both nodes' ranks trained every step
        assert [s["batch"] for s in steps[r]] == [1, 2, 3], r
    first = [set(i for s in steps[r] for i in s["doc_ids"]) for r in first_ranks]
    assert all(first) and sum(map(len, first)) == len(set().union(*first)), "two ranks read the same document"
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "ba3.pt", map_location="cpu", weights_only=False)
    assert ckpt["state"]["callbacks"]["ExactResume"]["world_size"] == len(first_ranks)  # the checkpoint knows its ranks

    _run(_args(shards, run_dir, "6ba"))  # one rank
    assert [s["batch"] for s in read_jsonl(run_dir / "doc_ids" / "rank0.jsonl")] == [1, 2, 3, 4, 5, 6]
    _run(_args(shards, run_dir, "1000ba"), launcher=2)  # two ranks: to the end of the epoch (data.epochs=1)

    steps = {r: read_jsonl(run_dir / "doc_ids" / f"rank{r}.jsonl") for r in (range(4) if nodes else range(2))}
    later = {r: [s for s in steps[r] if s["batch"] > 6] for r in (0, 1)}
    assert later[0] and [s["batch"] for s in later[0]] == [s["batch"] for s in later[1]]  # both ranks trained
    assert not {i for s in later[0] for i in s["doc_ids"]} & {i for s in later[1] for i in s["doc_ids"]}
    if nodes:
        assert [s["batch"] for s in steps[2]] == [1, 2, 3]  # ranks 2, 3 did not run again
    seen = Counter(i for r in steps for s in steps[r] for i in s["doc_ids"])
    assert sorted(seen) == list(range(N_DOCS)), f"missing: {sorted(set(range(N_DOCS)) - set(seen))[:20]}"
    assert set(seen.values()) == {1}, f"repeated: {[i for i, n in seen.items() if n > 1][:20]}"
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert recs[-1]["batch"] > 6
