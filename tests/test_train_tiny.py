"""A tiny real run (Composer Trainer, Streaming shards, packed rows) learns, and logs what sweeps read."""

import math

import pytest

from test_train_fixtures import read_jsonl, run_config


def eval_loss(trainer) -> float:
    trainer.eval()
    return float(trainer.state.eval_metric_values["MLMLoss"])


def test_tiny_run_lowers_eval_loss(tmp_path, data):
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    clean_stale_shared_memory()
    cfg = from_dict(RunConfig, run_config(
        tmp_path, data, max_duration="40ba", eval_interval="20ba", eval_subset_num_batches=8,
        optimizer={"lr": 1e-2}, scheduler={"name": "warmup_stable_decay", "t_warmup": "2Ktok", "t_decay": "0.25dur",
                                           "decay_shape": "one_minus_sqrt", "alpha_f": 0.01},
    ), "")
    run = build_trainer(cfg)
    try:
        before = eval_loss(run.trainer)
        run.fit()
        after = float(run.trainer.state.eval_metric_values["MLMLoss"])
    finally:
        run.close()
    assert before == pytest.approx(math.log(1024), abs=0.3)  # random init: ~uniform over the vocab
    assert after < before - 0.8, (before, after)  # ln(1024) = 6.93 -> below 6.15

    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["batch"] for r in train] == list(range(1, 41))  # one record per step, in order
    assert all(r["tokens"] > 0 for r in train) and train[-1]["tokens"] == run.trainer.state.timestamp.token.value
    first, last = train[0], train[-1]
    mean = lambda rs: sum(r["loss/train/total"] for r in rs) / len(rs)  # noqa: E731
    assert mean(train[-5:]) < mean(train[:5]) - 0.6
    assert 0.9 < last["data/packing_efficiency"] <= 1.0
    assert 0.25 < last["data/masked_fraction"] < 0.35  # the 30% masking rate
    assert last["throughput/tokens_per_sec"] > 0 and last["throughput/flops_per_sec_per_device"] > 0
    assert "metrics/eval/MLMPerplexity" in last  # eval at the end of training
    assert math.exp(last["metrics/eval/MLMLoss"]) == pytest.approx(last["metrics/eval/MLMPerplexity"], rel=1e-4)
    # the last checkpoint is the end of training and is intact
    from flexbert.train.checkpointing import checkpoint_problem, find_resume_checkpoint

    ckpt = find_resume_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert ckpt.endswith("ba40.pt") and checkpoint_problem(ckpt) is None


def test_export_of_the_trained_checkpoint_matches(tmp_path, data):
    """scripts/export_hf.py's library path: the HF folder reproduces the trained model's logits."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from flexbert.train.config import load_run_config
    from flexbert.weights.export import export_to_hf
    from flexbert.train.run_folder import checkpoint_model_state
    from test_train_fixtures import build_and_fit

    cfg = run_config(tmp_path, data, max_duration="3ba")
    build_and_fit(cfg)  # writes run/config.yaml, as train.py does
    info = export_to_hf(str(tmp_path / "hf"), run_dir=str(tmp_path / "run"))
    assert info["checkpoint"].endswith("ba3.pt")
    hf = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    from flexbert.model.model import FlexBertForMaskedLM

    flex = FlexBertForMaskedLM(load_run_config(str(tmp_path / "run" / "config.yaml")).model)
    flex.load_state_dict(checkpoint_model_state(info["checkpoint"]), strict=False)
    flex.tie_weights()
    flex.eval()
    enc = tok(["Lists are mutable sequences.", "The with statement is used to wrap a block."], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        a = hf(**enc).logits
        b = flex(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-4)
