"""Exact resume: stopping and autoresuming (cleanly, or after SIGKILL, or with a truncated newest
checkpoint) gives the same weights and the same per-step losses as an uninterrupted run.

Dropout is on (attn_out_dropout 0.1), so the RNG must be restored too, and the loader must
continue from its saved state (packer buffer + Streaming position) rather than replaying.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train_fixtures import ROOT, build_and_fit, read_jsonl, run_config

TOTAL = 12


def make_cfg(tmp_path, data, name, **kw):
    base = dict(max_duration=f"{TOTAL}ba", save_interval="2ba", save_num_to_keep=3, eval_interval="6ba",
                eval_subset_num_batches=2, model={"attn_out_dropout": 0.1}, run_dir=str(tmp_path / name))
    base.update(kw)
    cfg = run_config(tmp_path, data, **base)
    cfg["model"] = {**run_config(tmp_path, data)["model"], "attn_out_dropout": 0.1}
    # batch-size warmup on, so the resumed loader must also resume its schedule
    cfg["data"] = {**cfg["data"], "global_batch_size": 6, "batch_size_warmup_min": 2, "batch_size_warmup_tokens": 3000}
    return cfg


def weights(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]
    return {k: v for k, v in state.items()}


def losses(run_dir):
    recs = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r["kind"] == "train"]
    return {r["batch"]: r["loss/train/total"] for r in recs}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted run: TOTAL batches in one go."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = make_cfg(tmp, data, "ref")
    build_and_fit(cfg)
    run_dir = cfg["run_dir"]
    return weights(os.path.join(run_dir, "checkpoints", f"ba{TOTAL}.pt")), losses(run_dir)


def test_stop_then_autoresume_equals_uninterrupted(tmp_path, data, reference):
    ref_w, ref_losses = reference
    first = build_and_fit(make_cfg(tmp_path, data, "split", max_duration=f"{TOTAL // 2}ba"))
    assert first.plan.kind == "scratch"
    second = build_and_fit(make_cfg(tmp_path, data, "split"))  # same folder: autoresume
    assert second.plan.kind == "resume" and second.plan.path.endswith(f"ba{TOTAL // 2}.pt")
    assert second.callbacks["resume"].resumed_from_batch == TOTAL // 2
    run_dir = str(tmp_path / "split")
    assert_same_weights(weights(os.path.join(run_dir, "checkpoints", f"ba{TOTAL}.pt")), ref_w)
    got = losses(run_dir)
    assert sorted(got) == list(range(1, TOTAL + 1))  # each step logged once, across both processes
    assert got == ref_losses  # identical per-step losses, bit for bit


def test_resume_with_activation_checkpointing_equals_the_run_without(tmp_path, data, reference):
    """Activation checkpointing (every_2, then all after the resume: it may change there) keeps
    exact resume and changes no number: the same weights and losses as the reference without it."""
    ref_w, ref_losses = reference
    build_and_fit(make_cfg(tmp_path, data, "ac", max_duration=f"{TOTAL // 2}ba", activation_checkpointing="every_2"))
    second = build_and_fit(make_cfg(tmp_path, data, "ac", activation_checkpointing="all"))
    assert second.plan.kind == "resume" and second.model.model.model.checkpointed == frozenset({0, 1})
    run_dir = str(tmp_path / "ac")
    assert_same_weights(weights(os.path.join(run_dir, "checkpoints", f"ba{TOTAL}.pt")), ref_w)
    assert losses(run_dir) == ref_losses


def _wait_for(path, proc, timeout=180.0):
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_autoresume_equals_uninterrupted(tmp_path, data, reference):
    ref_w, ref_losses = reference
    cfg = make_cfg(tmp_path, data, "killed")
    run_dir, ckpts = cfg["run_dir"], os.path.join(cfg["run_dir"], "checkpoints")
    import yaml

    yaml_path = tmp_path / "killed.yaml"
    yaml_path.write_text(yaml.safe_dump(cfg))
    args = [sys.executable, os.path.join(ROOT, "train.py"), str(yaml_path)]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline")
    # 1) kill -9 at an arbitrary point after the checkpoint of batch 6 exists (mid-step 7 or 8,
    #    possibly mid-write of the batch-8 checkpoint)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(ckpts, "ba6.pt"), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # 2) the newest complete checkpoint is then cut in half, as by a crash of a non-atomic writer,
    #    and a partial temporary file is left behind: autoresume must skip both and warn
    newest = max(int(n[2:-3]) for n in os.listdir(ckpts) if n.startswith("ba") and n.endswith(".pt"))
    path = os.path.join(ckpts, f"ba{newest}.pt")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with open(os.path.join(ckpts, f".tmp-ba{newest + 2}.pt"), "wb") as f:
        f.write(b"PK\x03\x04 partial")
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping checkpoint {path}" in done.stderr  # the warning names the bad file
    assert "Traceback" not in done.stderr
    assert_same_weights(weights(os.path.join(ckpts, f"ba{TOTAL}.pt")), ref_w)
    got = losses(run_dir)
    assert sorted(got) == list(range(1, TOTAL + 1))
    assert got == ref_losses


@pytest.mark.slow
def test_sigterm_saves_the_batch_in_flight_and_resume_equals_uninterrupted(tmp_path, data, reference):
    """callbacks.graceful_stop: SIGTERM mid-run finishes the batch, saves it (off the 2-batch save
    schedule when it falls between), exits 143 in one line; rerunning continues exactly there."""
    import yaml

    ref_w, ref_losses = reference
    cfg = make_cfg(tmp_path, data, "preempted")
    ckpts = os.path.join(cfg["run_dir"], "checkpoints")
    yaml_path = tmp_path / "preempted.yaml"
    yaml_path.write_text(yaml.safe_dump(cfg))
    args = [sys.executable, os.path.join(ROOT, "train.py"), str(yaml_path)]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(ckpts, "ba4.pt"), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM after batch" in line]
    assert len(stopped) == 1 and "Traceback" not in err, err[-3000:]
    batch = int(stopped[0].split("after batch ")[1].split(":")[0])
    assert 4 <= batch < TOTAL
    assert os.path.realpath(os.path.join(ckpts, "latest.pt")) == os.path.join(os.path.realpath(ckpts), f"ba{batch}.pt")

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(weights(os.path.join(ckpts, f"ba{TOTAL}.pt")), ref_w)
    got = losses(cfg["run_dir"])
    assert sorted(got) == list(range(1, TOTAL + 1)) and got == ref_losses


def test_graceful_stop_names_unknown_signals():
    from flexbert.config import ConfigError
    from flexbert.train.config import load_run_config

    with pytest.raises(ConfigError, match=r"callbacks.graceful_stop: unknown signal 'SIGTREM' \(did you mean 'SIGTERM'\?\)"):
        load_run_config(os.path.join(ROOT, "configs", "tiny.yaml"), ["callbacks.graceful_stop=[SIGTREM]"])


def test_ctrl_c_saves_the_batch_in_flight(tmp_path, data):
    """SIGINT (Ctrl-C) stops like SIGTERM: the batch finishes, is saved, one line, exit 130."""
    import yaml

    cfg = make_cfg(tmp_path, data, "interrupted")
    ckpts = os.path.join(cfg["run_dir"], "checkpoints")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), str(tmp_path / "c.yaml")], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(ckpts, "ba2.pt"), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    stopped = [line for line in err.splitlines() if "stopped by SIGINT after batch" in line]
    assert len(stopped) == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    batch = int(stopped[0].split("after batch ")[1].split(":")[0])
    assert os.path.realpath(os.path.join(ckpts, "latest.pt")) == os.path.join(os.path.realpath(ckpts), f"ba{batch}.pt")
