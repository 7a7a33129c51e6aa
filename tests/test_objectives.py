"""``objective: clm`` in training: the loader labels next tokens and masks nothing, a tiny CLM run's
loss falls, a CLM -> MLM phase chain (configs/tiny-clm.yaml -> configs/tiny-clm-mlm.yaml) runs end
to end and resumes exactly after a SIGKILL in its second phase, and an MLM model takes every weight
of a CLM checkpoint.  (Causal attention itself: tests/test_clm.py.)"""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from test_train_fixtures import PY, ROOT, build_and_fit, model_overrides, read_jsonl, run_config, to_overrides

from flexbert.config import ConfigError, from_dict
from flexbert.train.config import RunConfig, load_run_config

CLM, CLM_MLM = (os.path.join(ROOT, "configs", f"{n}.yaml") for n in ("tiny-clm", "tiny-clm-mlm"))


def test_a_bad_objective_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as e:
        load_run_config(CLM, ["objective=foo"])
    assert str(e.value) == "objective: unknown value 'foo'; valid choices: mlm, clm"


def test_a_run_folder_from_before_the_objective_key_resumes():
    """config.yaml of a run started before ``objective`` / ``teacher`` existed: the keys count at
    their defaults, so resuming it changes nothing (not 'objective (None -> mlm)')."""
    from flexbert.train.config import as_plain_dict
    from flexbert.train.run_identity import differences

    new = as_plain_dict(load_run_config(CLM_MLM))
    old = {k: v for k, v in new.items() if k not in ("objective", "teacher")}
    assert differences(old, new) == {}
    assert differences(old, {**new, "objective": "clm"}) == {"objective": ("mlm", "clm")}


def test_the_clm_recipes_split_the_budget_they_name():
    """The share is one config value (phase 1's max_duration); phase 2 is the MLM recipe continued
    on one clock to its budget, and phase 1 follows the same LR schedule."""
    for first, second, whole in (("tiny-clm", "tiny-clm-mlm", "tiny"), ("base-clm", "base-clm-mlm", "base")):
        a, b, w = (load_run_config(os.path.join(ROOT, "configs", f"{n}.yaml")) for n in (first, second, whole))
        assert (a.objective, b.objective, w.objective) == ("clm", "mlm", "mlm")
        tokens = [float(c.max_duration.replace("Ktok", "e3").replace("Mtok", "e6").replace("Btok", "e9")) for c in (a, w)]
        assert tokens[0] == pytest.approx(0.25 * tokens[1], rel=1e-3) and b.max_duration == w.max_duration
        assert b.load_path and not b.reset_time and (b.scheduler, b.data) == (w.scheduler, w.data)
    assert load_run_config(os.path.join(ROOT, "configs", "tiny-clm.yaml")).scheduler == {
        **load_run_config(os.path.join(ROOT, "configs", "tiny.yaml")).scheduler, "t_max": "2Mtok", "t_decay": "400Ktok"}


def test_the_clm_loader_labels_next_tokens_and_masks_nothing(tmp_path, data):
    from flexbert.data.loader import build_eval_loader, build_train_loader
    from flexbert.data.masking import clm_labels

    cfg = from_dict(RunConfig, run_config(tmp_path, data, objective="clm"), "")
    for loader in (build_train_loader(cfg.data, objective="clm"), build_eval_loader(cfg.data, objective="clm")):
        batch = next(iter(loader))
        assert batch["mlm_probability"] == 0.0
        for row in batch["rows"]:
            ids, labels = row["input_ids"].numpy(), row["labels"].numpy()
            assert not (ids == cfg.model.mask_token_id).any()  # nothing masked, nothing replaced
            assert (labels == clm_labels(ids, row["cu_seqlens"], row["num_tokens"])).all()
            assert row["num_masked"] == int((labels != -100).sum()) > 0.9 * row["num_tokens"]


def test_every_call_of_a_clm_run_is_causal(tmp_path, data):
    """The Composer model of an ``objective: clm`` config runs causally in training and evaluation,
    and so does the held-out evaluation with its by-length breakdown."""
    from flexbert.data.loader import build_eval_loader
    from flexbert.eval.mlm import evaluate_mlm
    from flexbert.train.recipe import build_model

    cfg = from_dict(RunConfig, run_config(tmp_path, data, objective="clm", model={"attn_out_dropout": 0.0}), "")
    model = build_model(cfg)
    row = next(iter(build_eval_loader(cfg.data, objective="clm")))["rows"][0]
    args = dict(input_ids=row["input_ids"], labels=row["labels"], cu_seqlens=row["cu_seqlens"],
                max_seqlen=int(row["max_seqlen"]), return_logits=False)
    with torch.no_grad():
        causal, bidirectional = (model.model(**args, causal=c).stats.loss_sum for c in (True, False))
        assert causal != bidirectional
        assert model.train()(row).stats.loss_sum == causal and model.eval().eval_forward(row).stats.loss_sum == causal
    out = evaluate_mlm(model.model, [{"rows": [row]}], bounds=[64], causal=True)
    assert out["loss"] * out["masked_tokens"] == pytest.approx(float(causal), rel=1e-6)
    by_length = sum(b["loss"] * b["masked_tokens"] for b in out["by_length"] if b["masked_tokens"])
    assert by_length == pytest.approx(float(causal), rel=1e-5)


def test_a_tiny_clm_run_learns(tmp_path, data):
    """Causal attention, next-token labels: the train loss falls, the eval loss is the next-token
    loss, and the head predicts nearly every token (the throughput doctor's predicted share)."""
    cfg = run_config(tmp_path, data, objective="clm", max_duration="14ba", eval_interval="14ba", eval_subset_num_batches=2)
    build_and_fit(cfg)
    recs = [r for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if r["kind"] == "train"]
    losses = [r["loss/train/total"] for r in recs]
    assert len(losses) == 14 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses  # 6.94 -> 6.64
    assert all(r["data/masked_fraction"] > 0.9 and r["data/mlm_probability"] == 0.0 for r in recs)
    # the throughput doctor's FLOPs count the head on every predicted token: ~all of them
    from flexbert.model.flops import flops_per_token

    model, share = from_dict(RunConfig, cfg, "").model, recs[-1]["data/masked_fraction"]
    per_token = recs[-1]["throughput/flops_per_sec_per_device"] / recs[-1]["throughput/tokens_per_sec_per_device"]
    assert per_token == pytest.approx(flops_per_token(model, 128, share), rel=0.02)
    assert per_token > 1.3 * flops_per_token(model, 128, 0.3)  # MLM with sparse prediction: 0.3
    assert recs[-1]["metrics/eval/MLMLoss"] < losses[0]


def _chain_args(data):
    """The chain at test size: phase 1 (CLM) batches 1-4, phase 2 (MLM) 5-10 on the same clock."""
    return to_overrides(model_overrides(attn_out_dropout=0.1), "model.") + [
        f"data.local={data}", "data.num_workers=0", "data.global_batch_size=4", "data.microbatch_size=2",
        "data.doc_batch_size=32", "data.packer_buffer_size=64", "eval_subset_num_batches=2", "save_interval=2ba",
        "loggers.console=false", "data.batch_size_warmup_tokens=3000", "data.batch_size_warmup_min=2",
        "scheduler.t_warmup=2ba", "scheduler.t_max=10ba", "scheduler.t_decay=4ba",
        "1:max_duration=4ba", "2:max_duration=10ba"]


def _wait_for_batch(run_dir, batch, proc, timeout=900.0):
    """Until ``run_dir`` has the checkpoint and the metrics record of ``batch`` (the record follows
    the checkpoint at the same event: a kill between the two would lose that batch's record)."""
    def logged():
        if not os.path.exists(run_dir / "metrics.jsonl"):
            return False
        lines = open(run_dir / "metrics.jsonl").read().split("\n")[:-1]  # whole lines only
        return any(json.loads(line)["batch"] >= batch for line in lines if line)

    t0 = time.time()
    while not (os.path.exists(run_dir / "checkpoints" / f"ba{batch}.pt") and logged()):
        assert proc.poll() is None, f"the chain exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.time() - t0 < timeout, f"batch {batch} of {run_dir} never came"
        time.sleep(0.05)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]["model"]


@pytest.mark.slow
def test_clm_then_mlm_chain_resumes_exactly_after_sigkill(tmp_path, data):
    from flexbert.train.builders import build_trainer
    from flexbert.train.loading import load_initial_weights
    from flexbert.train.recipe import build_model
    from flexbert.train.run_folder import checkpoint_model_state

    root, args = tmp_path / "chain", _chain_args(data)
    cmd = [PY, "-m", "flexbert", "phases", CLM, CLM_MLM, "--runs-root", str(root), *args]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_batch(root / "tiny-clm-mlm", 6, proc)  # in phase 2, after its first checkpoint
    os.killpg(proc.pid, signal.SIGKILL)  # the chain and its training child
    proc.wait(timeout=60)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiny-clm: already finished" in done.stdout
    first = json.load(open(root / "tiny-clm" / "phase_done.json"))["checkpoint"]
    assert load_run_config(str(root / "tiny-clm" / "config.yaml")).objective == "clm"
    # the reference: phase 2 uninterrupted, from the same phase-1 checkpoint, in this process
    ref_dir = tmp_path / "ref"
    ov = [o[2:] if o.startswith("2:") else o for o in args if not o.startswith("1:")]
    ref = build_trainer(load_run_config(CLM_MLM, ov + [f"run_dir={ref_dir}", f"load_path={first}"]))
    try:
        ref.fit()
    finally:
        ref.close()
    resumed, uninterrupted = (_weights(d / "checkpoints" / "ba10.pt") for d in (root / "tiny-clm-mlm", ref_dir))
    for k in uninterrupted:
        torch.testing.assert_close(resumed[k], uninterrupted[k], rtol=0, atol=0, msg=lambda m: f"{k}: {m}")

    def losses(d):
        return {r["batch"]: r["loss/train/total"] for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "train"}

    assert losses(root / "tiny-clm-mlm") == losses(ref_dir) and sorted(losses(ref_dir)) == list(range(5, 11))
    phase1, phase2 = (read_jsonl(root / n / "metrics.jsonl") for n in ("tiny-clm", "tiny-clm-mlm"))
    assert sorted(losses(root / "tiny-clm")) == [1, 2, 3, 4]  # one clock: phase 2 goes on from batch 5 and its tokens
    assert min(r["tokens"] for r in phase2 if r["kind"] == "train") > max(r["tokens"] for r in phase1)
    for name in ("tiny-clm", "tiny-clm-mlm"):  # each phase evaluated with its own objective, by document length
        buckets = json.load(open(root / name / "length_buckets_eval.json"))
        assert sum(b["masked_tokens"] for b in buckets) > 0
    # an MLM model takes every weight of the CLM checkpoint
    mlm = build_model(load_run_config(str(root / "tiny-clm-mlm" / "config.yaml")))
    load_initial_weights(mlm, first)
    clm_state, got = checkpoint_model_state(first), mlm.model.state_dict()
    assert set(clm_state) == set(got) and all(torch.equal(got[k], v) for k, v in clm_state.items())
