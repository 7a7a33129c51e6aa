"""Moving between rank counts, in the loader: the Streaming sample order is the one the first run
fixed (num_canonical_nodes kept), and documents a fast rank read ahead are not trained twice. The
end-to-end launches (4 ranks on two nodes -> 1 rank -> 2 ranks, every document of the epoch once)
are tests/test_multinode.py."""

from __future__ import annotations

from collections import Counter


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
