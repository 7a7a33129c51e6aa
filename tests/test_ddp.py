"""`composer -n 2 train.py configs/tiny.yaml` trains two gloo ranks on CPU; they read disjoint data."""

import json
import os

from test_train_fixtures import ROOT, data_dir, read_jsonl, train_py


def test_two_ranks_tiny_config(tmp_path_factory):
    data = data_dir(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("ddp")
    run_dir = tmp / "run"
    proc = train_py([os.path.join(ROOT, "configs", "tiny.yaml"), f"data.local={data}", f"run_dir={run_dir}",
                     "max_duration=4ba", "eval_interval=2ba", "eval_subset_num_batches=2", "save_interval=2ba",
                     "callbacks.audit_doc_ids=true", "data.batch_size_warmup_tokens=3000"], launcher=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ids = {}
    for rank in (0, 1):
        steps = read_jsonl(run_dir / "doc_ids" / f"rank{rank}.jsonl")
        assert [s["batch"] for s in steps] == [1, 2, 3, 4]
        ids[rank] = [i for s in steps for i in s["doc_ids"]]
        assert ids[rank]
    assert not set(ids[0]) & set(ids[1]), "ranks trained on the same documents"
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["batch"] for r in recs] == [1, 2, 3, 4]
    assert "metrics/eval/MLMLoss" in recs[-1]
    # tokens are counted over both ranks
    assert recs[-1]["tokens"] > 2 * 1024
    assert os.path.exists(run_dir / "checkpoints" / "ba4.pt")
