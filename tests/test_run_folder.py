"""A run folder nobody can corrupt, and every consumer finding it through its one owner
(flexbert/train/run_folder.py): a custom save_folder, one writer at a time, the config the run was
trained with kept, corrupt checkpoints and exports refused on every load path, rotation that keeps
the newest intact checkpoint, and one line for each bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from test_train_fixtures import ROOT, run_config, train_py


def _copy_run(trained, tmp_path) -> tuple[dict, str]:
    """A private copy of the finished run (its checkpoints in the copy's own save folder)."""
    cfg, _ = trained
    mine = dict(cfg, run_dir=str(tmp_path / "run"), save_folder=str(tmp_path / "ckpts"))
    shutil.copytree(cfg["run_dir"], mine["run_dir"])
    shutil.copytree(cfg["save_folder"], mine["save_folder"])
    kept = yaml.safe_load(open(os.path.join(mine["run_dir"], "config.yaml")))
    kept.update(run_dir=mine["run_dir"], save_folder=mine["save_folder"])
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(mine))
    return mine, str(path)


def _one_error_line(r) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert lines and "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[-1]


def test_a_custom_save_folder_is_found_by_every_consumer(trained, tmp_path):
    from flexbert.weights.averaging import best_checkpoints
    from flexbert.train.config import load_run_config
    from flexbert.weights.export import export_to_hf
    from flexbert.experiments.phases import final_checkpoint
    from flexbert.weights.load import load_pretrained, mlm_model
    from flexbert.train.run_folder import RunFolder

    cfg, _ = trained
    run = RunFolder(cfg["run_dir"])
    newest = os.path.join(cfg["save_folder"], "ba4.pt")
    assert run.newest_checkpoint() == newest and not os.path.exists(os.path.join(cfg["run_dir"], "checkpoints"))
    assert export_to_hf(str(tmp_path / "hf"), run_dir=cfg["run_dir"])["checkpoint"] == newest
    assert load_pretrained(cfg["run_dir"]).path == newest  # evaluation, fine-tuning and tiling load through here
    assert best_checkpoints(cfg["run_dir"], 1) == [os.path.join(cfg["save_folder"], "ba2.pt"), newest]
    assert final_checkpoint(load_run_config(os.path.join(cfg["run_dir"], "config.yaml"))) == newest
    # a checkpoint copied anywhere still knows its model: it carries its config
    stray = tmp_path / "stray" / "ba4.pt"
    stray.parent.mkdir()
    shutil.copy(newest, stray)
    pre = load_pretrained(str(stray))
    assert pre.config.hidden_size == cfg["model"]["hidden_size"]
    assert torch.equal(mlm_model(pre).state_dict()["head.dense.weight"], mlm_model(load_pretrained(cfg["run_dir"])).state_dict()["head.dense.weight"])


@pytest.mark.slow
def test_a_second_writer_refuses_and_a_dead_writers_lock_is_taken_over(trained, tmp_path):
    cfg, config = _copy_run(trained, tmp_path)
    lock = os.path.join(cfg["run_dir"], ".lock")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        from flexbert.train.run_lock import _start_time

        with open(lock, "w") as f:
            json.dump({"pid": holder.pid, "host": os.uname().nodename, "start": _start_time(holder.pid), "time": 0,
                       "what": "train.py other"}, f)
        r = train_py([config, "max_duration=6ba"])
        assert r.returncode == 2
        assert _one_error_line(r).startswith(f"error: {cfg['run_dir']} is in use by process {holder.pid} on ")
        assert not os.path.exists(os.path.join(cfg["save_folder"], "ba6.pt"))
    finally:
        holder.kill()
        holder.wait()
    r = train_py([config, "max_duration=6ba"])  # the holder is gone: its lock is stale
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"taking over the lock of {cfg['run_dir']} from process {holder.pid}" in r.stderr
    assert os.path.exists(os.path.join(cfg["save_folder"], "ba6.pt")) and not os.path.exists(lock)


def test_the_lock_is_given_back_when_building_the_trainer_fails(tmp_path, data):
    """A failure after the lock was taken (here init_from names nothing) leaves no .lock behind: in
    this process (a notebook, a sweep runner) the folder is free again, not held by a live pid."""
    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig
    from flexbert.train.loading import SetupError
    from flexbert.train.run_lock import read_lock

    cfg = run_config(tmp_path, data, init_from=str(tmp_path / "missing"))
    with pytest.raises(SetupError, match="does not exist"):
        build_trainer(from_dict(RunConfig, cfg, ""))
    assert os.path.isdir(cfg["run_dir"])  # the lock was taken (the folder made for it) ...
    assert read_lock(cfg["run_dir"]) is None and os.listdir(cfg["run_dir"]) == []  # ... and given back


@pytest.mark.parametrize("override, key", [("model.activation=silu", "model.activation"),
                                           ("model.hidden_size=96", "model.hidden_size")])
def test_a_rerun_with_another_model_refuses_and_changes_nothing(trained, tmp_path, override, key):
    cfg, config = _copy_run(trained, tmp_path)
    kept = open(os.path.join(cfg["run_dir"], "config.yaml")).read()
    metrics = open(os.path.join(cfg["run_dir"], "metrics.jsonl")).read()
    r = train_py([config, override, "max_duration=6ba"])
    assert r.returncode == 2
    line = _one_error_line(r)
    assert line.startswith(f"error: {cfg['run_dir']} was trained with other settings: {key} (") and "new run_dir" in line
    assert open(os.path.join(cfg["run_dir"], "config.yaml")).read() == kept
    assert open(os.path.join(cfg["run_dir"], "metrics.jsonl")).read() == metrics
    assert sorted(os.listdir(cfg["save_folder"])) == ["ba2.pt", "ba4.pt", "latest.pt"]


@pytest.mark.slow
def test_a_resume_may_change_the_lr_and_a_run_that_trains_nothing_changes_nothing(trained, tmp_path):
    cfg, config = _copy_run(trained, tmp_path)
    run_dir = cfg["run_dir"]
    kept = open(os.path.join(run_dir, "config.yaml")).read()
    r = train_py([config, "optimizer.lr=1e-4"])  # complete already: nothing trains, nothing is written
    assert r.returncode == 0 and "already complete" in r.stdout, r.stderr[-2000:]
    assert not os.path.exists(os.path.join(run_dir, "config_history.jsonl"))
    r = train_py([config, "optimizer.lr=1e-4", "max_duration=6ba"])  # the rollback recipe's kind of change
    assert r.returncode == 0, r.stderr[-3000:]
    assert open(os.path.join(run_dir, "config.yaml")).read() == kept  # what the first checkpoints were trained with
    (entry,) = [json.loads(x) for x in open(os.path.join(run_dir, "config_history.jsonl"))]
    assert entry["resumed_at_batch"] == 4
    assert entry["changes"] == {"max_duration": ["4ba", "6ba"], "optimizer.lr": [0.002, 0.0001]}
    lrs = [x["lr"] for x in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl"))) if x["kind"] == "train"]
    assert lrs[4:] == [pytest.approx(1e-4)] * 2


def _corrupt(path, offset_fraction=0.5, size=4096):
    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * offset_fraction))
        f.write(os.urandom(size))


def test_a_corrupt_checkpoint_file_is_refused_on_every_load_path(trained, tmp_path):
    from flexbert.weights.export import ExportError, export_to_hf
    from flexbert.train.loading import SetupError, load_initial_weights
    from flexbert.weights.load import ModelLoadError, load_pretrained
    from flexbert.train.recipe import build_model
    from flexbert.train.run_folder import RunFolder

    cfg, _ = trained
    bad = tmp_path / "ba4.pt"
    shutil.copy(os.path.join(cfg["save_folder"], "ba4.pt"), bad)
    _corrupt(bad)
    with pytest.raises(ModelLoadError, match=f"cannot read checkpoint {bad}: corrupt member"):
        load_pretrained(str(bad))
    with pytest.raises(ExportError, match="corrupt member"):
        export_to_hf(str(tmp_path / "hf"), checkpoint=str(bad))
    with pytest.raises(SetupError, match=f"init_from: cannot read {bad}: corrupt member"):
        load_initial_weights(build_model(RunFolder(cfg["run_dir"]).load_config()), str(bad))


def test_a_corrupt_or_truncated_export_is_refused(trained, tmp_path):
    from flexbert.weights.export import export_to_hf
    from flexbert.weights.load import ModelLoadError, load_pretrained

    cfg, _ = trained
    for how in ("overwritten", "truncated"):
        out = tmp_path / how
        export_to_hf(str(out), run_dir=cfg["run_dir"])
        weights = out / "model.safetensors"
        if how == "truncated":
            os.truncate(weights, os.path.getsize(weights) // 2)
            match = "not a complete safetensors file"
        else:
            _corrupt(weights, 0.6, 64)
            match = "corrupt"
        with pytest.raises(ModelLoadError, match=f"{weights}: {match}"):
            load_pretrained(str(out))


def test_a_config_whose_sizes_differ_from_the_checkpoint_is_one_line(trained, tmp_path):
    from flexbert.weights.export import ExportError, export_to_hf

    cfg, _ = trained
    other = dict(cfg, model={**cfg["model"], "intermediate_size": 128})
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    with pytest.raises(ExportError, match=r"model.layers.0.mlp.Wi.weight has shape \(192, 64\) there but \(256, 64\)"):
        export_to_hf(str(tmp_path / "hf"), checkpoint=os.path.join(cfg["save_folder"], "ba4.pt"), config=str(path))


def test_rotation_never_drops_the_newest_intact_checkpoint(tmp_path):
    from flexbert.train.checkpointing import AtomicCheckpointSaver, find_resume_checkpoint

    saver = AtomicCheckpointSaver(str(tmp_path), "1ba", num_to_keep=2)
    for b in (1, 2, 3):
        torch.save({"state": {"model": {"w": torch.randn(2000)}}}, tmp_path / f"ba{b}.pt")
        saver.saved.append(str(tmp_path / f"ba{b}.pt"))
    _corrupt(tmp_path / "ba3.pt")  # the newest went bad on disk
    with pytest.warns(UserWarning, match="ba3.pt is corrupt"):
        saver._rotate()
    assert sorted(os.listdir(tmp_path)) == ["ba1.pt", "ba2.pt", "ba3.pt.corrupt"]
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "ba2.pt")


@pytest.mark.parametrize("override, message", [
    ("max_duration=0ba", "max_duration: must be more than zero, got '0ba'"),
    ("eval_interval=0ba", "eval_interval: must be more than zero, got '0ba'"),
])
def test_zero_durations_are_refused(override, message):
    from flexbert.config import ConfigError
    from flexbert.train.config import load_run_config

    with pytest.raises(ConfigError) as e:
        load_run_config(os.path.join(ROOT, "configs", "tiny.yaml"), [override])
    assert str(e.value) == message


def test_a_run_folder_moved_elsewhere_resumes_as_the_same_run_with_a_note(trained, tmp_path, capsys):
    """`mv` of a run folder (and of its save folder beside it): config.yaml still names the old
    run_dir, and the rerun at the new path continues the run, saying so in one line."""
    from test_train_fixtures import build_and_fit, read_jsonl

    cfg, _ = trained
    moved = dict(cfg, run_dir=str(tmp_path / "run"), save_folder=str(tmp_path / "elsewhere" / "ckpts"), max_duration="6ba")
    shutil.copytree(cfg["run_dir"], moved["run_dir"])
    shutil.copytree(cfg["save_folder"], moved["save_folder"])
    assert yaml.safe_load(open(os.path.join(moved["run_dir"], "config.yaml")))["run_dir"] == cfg["run_dir"]
    run = build_and_fit(moved)
    assert run.plan.path == os.path.join(moved["save_folder"], "ba4.pt")  # resumed, not started over
    assert os.path.exists(os.path.join(moved["save_folder"], "ba6.pt"))
    note = [x for x in capsys.readouterr().err.splitlines() if "(moved)" in x]
    assert note == [f"[flexbert] {moved['run_dir']} holds the run recorded at {cfg['run_dir']} (moved): resuming it "
                    "here, its config, checkpoints and data identity unchanged"]
    (entry,) = read_jsonl(os.path.join(moved["run_dir"], "config_history.jsonl"))
    assert entry["changes"]["run_dir"] == [cfg["run_dir"], moved["run_dir"]] and entry["resumed_at_batch"] == 4
    with pytest.raises(Exception, match="was trained with other settings: model.hidden_size"):  # still the same run only
        build_and_fit(dict(moved, run_dir=str(tmp_path / "run"), max_duration="8ba", model=dict(cfg["model"], hidden_size=96)))
