"""Moving between rank counts: a run trained on 1 rank, stopped mid-epoch and resumed on 2 ranks
(`composer -n 2`, gloo) trains on every document of the epoch exactly once (the document audit),
and the Streaming sample order is the one the first run fixed (num_canonical_nodes kept)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from test_train_fixtures import ROOT, documents, read_jsonl, train_py

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


@pytest.mark.slow
def test_one_rank_then_two_ranks_trains_each_document_of_the_epoch_once(tmp_path, shards):
    run_dir = tmp_path / "run"
    _run(_args(shards, run_dir, "3ba"))  # one rank, stops mid-epoch at batch 3
    first = read_jsonl(run_dir / "doc_ids" / "rank0.jsonl")
    assert [r["batch"] for r in first] == [1, 2, 3]
    _run(_args(shards, run_dir, "1000ba"), launcher=2)  # two ranks: to the end of the epoch (data.epochs=1)

    steps = {r: read_jsonl(run_dir / "doc_ids" / f"rank{r}.jsonl") for r in (0, 1)}
    later = {r: [s for s in steps[r] if s["batch"] > 3] for r in (0, 1)}
    assert later[0] and [s["batch"] for s in later[0]] == [s["batch"] for s in later[1]]  # both ranks trained
    seen = Counter(i for r in (0, 1) for s in steps[r] for i in s["doc_ids"])
    assert sorted(seen) == list(range(N_DOCS)), f"missing: {sorted(set(range(N_DOCS)) - set(seen))[:20]}"
    assert set(seen.values()) == {1}, f"repeated: {[i for i, n in seen.items() if n > 1][:20]}"
    assert not {i for s in later[0] for i in s["doc_ids"]} & {i for s in later[1] for i in s["doc_ids"]}


def test_num_canonical_nodes_of_the_first_run_is_kept(data):
    """The resumed loader takes the first run's canonical nodes from the state and keeps them on
    the dataset, so that later epochs (where Streaming no longer reads the state) keep the order."""
    from data_fixtures.helpers import clean_shm
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    base = dict(local=data, max_seq_len=128, microbatch_size=2, num_workers=0, doc_batch_size=16, packer_buffer_size=32)
    clean_shm()
    first = build_train_loader(DataConfig(**base, num_canonical_nodes=4), rank=0, world_size=1)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()
    assert state["streaming"]["num_canonical_nodes"] == 4
    clean_shm()
    later = build_train_loader(DataConfig(**base), rank=0, world_size=1)
    assert later.docs.dataset.num_canonical_nodes in (None, 1)
    later.load_state_dict(state)
    assert later.docs.dataset.num_canonical_nodes == 4 and later.state_dict()["streaming"]["num_canonical_nodes"] == 4
    clean_shm()


def test_documents_read_ahead_of_the_common_position_are_not_trained_twice(data):
    """A loader state whose rank had read 16 documents beyond the position all ranks reached (as a
    fast rank does): resumed elastically, those documents come from Streaming again and are
    dropped by id, while the held ones are handed on, so the epoch has every document once."""
    from data_fixtures.helpers import clean_shm
    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader

    cfg = DataConfig(local=data, max_seq_len=128, microbatch_size=2, num_workers=0, doc_batch_size=16,
                     packer_buffer_size=32, epochs=1, return_doc_ids=True)
    ids = lambda batch: [i for row in batch["rows"] for i in row["doc_ids"].tolist()]  # noqa: E731
    clean_shm()
    first = build_train_loader(cfg, rank=0, world_size=1)
    it = iter(first)
    before = [i for _ in range(5) for i in ids(next(it))]
    state = first.state_dict()
    k = 16
    state["streaming"]["sample_in_epoch"] -= k  # the slowest rank stood k documents earlier
    state["skip"], state["ahead_ids"] = k, first.docs.recent.last(k)
    n = first.docs.dataset.num_samples
    clean_shm()
    resumed = build_train_loader(cfg, rank=0, world_size=1)
    resumed.load_elastic_state([state])
    after = [i for batch in resumed for i in ids(batch)]
    clean_shm()
    seen = Counter(before + after)
    assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}
    assert resumed.steps > 5 and resumed.rows_global > first.rows_global  # counters went on
