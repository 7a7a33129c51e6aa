"""Checkpoint averaging (flexbert/weights/averaging.py, scripts/average_checkpoints.py)."""

import os
import shutil
import subprocess

import pytest
import torch

from test_train_fixtures import PY, ROOT, build_and_fit, run_config

from flexbert.weights.averaging import AveragingError, average_checkpoints, best_checkpoints, eval_metric_by_batch


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("avg")
    cfg = run_config(tmp, data, max_duration="6ba", save_interval="2ba", eval_interval="2ba", save_num_to_keep=-1)
    build_and_fit(cfg)
    return cfg["run_dir"]


def _model(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


def _ck(run, b):
    return os.path.join(run, "checkpoints", f"ba{b}.pt")


def test_one_checkpoint_is_unchanged_two_are_their_exact_mean(tmp_path, run):
    out = average_checkpoints([_ck(run, 4)], str(tmp_path / "one"))
    src, got = _model(_ck(run, 4)), _model(out)
    assert set(got) == set(src) and all(torch.equal(got[k], src[k]) for k in src)
    out2 = average_checkpoints([_ck(run, 2), _ck(run, 6)], str(tmp_path / "two"))
    assert os.path.basename(out2) == "ba6.pt" and os.path.exists(tmp_path / "two" / "config.yaml")
    a, b, got = _model(_ck(run, 2)), _model(_ck(run, 6)), _model(out2)
    k = "model.model.layers.0.attn.Wqkv.weight"
    assert not torch.equal(a[k], b[k])
    for k in a:
        assert torch.equal(got[k], (a[k].float() + b[k].float()) / 2), k


def test_best_k_by_eval_metric_plus_final(run):
    import json

    # the expected ranking from metrics.jsonl read here, not through the function under test
    values = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        rec = json.loads(line) if line.strip() else {}
        if "metrics/eval/MLMLoss" in rec:
            values[rec["batch"]] = rec["metrics/eval/MLMLoss"]
    assert eval_metric_by_batch(run, "MLMLoss") == values
    assert set(values) >= {2, 4, 6}
    best = min((values[2], 2), (values[4], 4))[1]
    assert best_checkpoints(run, 1, "MLMLoss") == [_ck(run, best), _ck(run, 6)]
    worst = max((values[2], 2), (values[4], 4))[1]
    assert best_checkpoints(run, 1, "MLMLoss", maximize=True) == [_ck(run, worst), _ck(run, 6)]
    assert best_checkpoints(run, 2) == [_ck(run, 2), _ck(run, 4), _ck(run, 6)]
    with pytest.raises(AveragingError, match="only 2 checkpoint"):
        best_checkpoints(run, 5)


def test_best_k_reads_the_evaluation_not_the_training_metrics(tmp_path, run):
    """A copy of the run whose metrics.jsonl says one thing in its training keys and the opposite
    in its evaluation keys: the pick follows the evaluation (batch 4 by eval loss, though batch 2
    trained to the lower loss; batch 2 by eval accuracy, though batch 4 trained more accurately)."""
    import json

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    train = {2: (4.0, 0.30), 4: (6.5, 0.10), 6: (6.0, 0.20)}  # batch: (training loss, training accuracy)
    evals = {2: (6.0, 0.25), 4: (5.0, 0.05), 6: (4.5, 0.15)}  # batch: (eval loss, eval accuracy)
    with open(copy / "metrics.jsonl", "w") as f:
        for b in range(1, 7):
            rec = {"kind": "train", "batch": b, "loss/train/total": train.get(b, (9.0, 0.0))[0],
                   "metrics/train/MLMLoss": train.get(b, (9.0, 0.0))[0],
                   "metrics/train/MLMAccuracy": train.get(b, (9.0, 0.0))[1]}
            if b in evals:
                rec.update({"metrics/eval/MLMLoss": evals[b][0], "metrics/eval/MLMAccuracy": evals[b][1]})
            f.write(json.dumps(rec) + "\n")
    ck = lambda b: os.path.join(copy, "checkpoints", f"ba{b}.pt")  # noqa: E731
    assert eval_metric_by_batch(str(copy), "MLMLoss") == {2: 6.0, 4: 5.0, 6: 4.5}
    assert best_checkpoints(str(copy), 1, "MLMLoss") == [ck(4), ck(6)]
    assert best_checkpoints(str(copy), 1, "MLMAccuracy", maximize=True) == [ck(2), ck(6)]
    assert best_checkpoints(str(copy), 1, "metrics/eval/MLMLoss") == [ck(4), ck(6)]


def test_refuses_checkpoints_of_different_configs(tmp_path, run):
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    # a checkpoint of another model: the config it carries (what it was trained with) differs
    ckpt = torch.load(_ck(run, 2), map_location="cpu", weights_only=False)
    ckpt["state"]["callbacks"]["AtomicCheckpointSaver"]["config"]["model"]["local_rope_theta"] = 20000.0
    torch.save(ckpt, other / "checkpoints" / "ba2.pt")
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/average_checkpoints.py"), "--out", str(tmp_path / "x"),
                        _ck(run, 4), str(other / "checkpoints" / "ba2.pt")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "different model config" in r.stderr and "model.local_rope_theta" in r.stderr


@pytest.mark.slow
def test_averaged_checkpoint_exports_loads_and_inits(tmp_path, run):
    from transformers import AutoModelForMaskedLM

    from flexbert.train.loading import load_initial_weights
    from flexbert.train.recipe import build_model
    from flexbert.train.config import load_run_config

    out_dir = tmp_path / "avg"
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/average_checkpoints.py"), "--out", str(out_dir),
                        "--run-dir", run, "--best-k", "2"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    ckpt = str(out_dir / "checkpoints" / "ba6.pt")
    avg = _model(ckpt)
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/export_hf.py"), "--run-dir", str(out_dir), "--out",
                        str(tmp_path / "hf")], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    hf = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf"))
    k = "model.layers.1.mlp.Wi.weight"
    assert torch.equal(hf.state_dict()[k], avg["model." + k])
    model = build_model(load_run_config(str(out_dir / "config.yaml")))
    load_initial_weights(model, ckpt)  # init_from: the averaged checkpoint
    assert torch.equal(model.model.state_dict()[k], avg["model." + k])
