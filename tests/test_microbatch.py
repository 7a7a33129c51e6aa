"""``data.microbatch_size: auto``: the search picks the largest fitting row under a fake memory
limit, the CPU rule, persistence across resumes, and a real training run that resolves it."""

from __future__ import annotations

import json
import os

import pytest

from flexbert.config import ConfigError, from_dict
from flexbert.train.config import RunConfig, load_run_config
from flexbert.train.memory import estimate_peak
from flexbert.train.microbatch import RECORD, cpu_choice, divisors, resolve_microbatch, search
from test_train_fixtures import ROOT, build_and_fit, read_jsonl, run_config

BASE = load_run_config(os.path.join(ROOT, "configs", "base.yaml")).model


def fake_gpu(limit_gib: float, calls: list):
    """fits(mb): the base model's estimated allocated peak at mb x 1024 tokens under a fake limit."""
    def fits(mb: int) -> bool:
        calls.append(mb)
        return estimate_peak(BASE, mb * 1024, "none", 0.30, lean=False).allocated <= limit_gib
    return fits


@pytest.mark.parametrize("limit", [3.0, 10.0, 28.0, 40.0, 60.0, 71.0, 200.0])
@pytest.mark.parametrize("start", [None, 1, 24, 48, 576])
def test_search_picks_the_largest_fitting_row(limit, start):
    cands = divisors(576)  # base: 4608 sequences over 8 ranks
    calls: list = []
    got, tried = search(cands, fake_gpu(limit, calls), start)
    brute = [c for c in cands if estimate_peak(BASE, c * 1024, "none", 0.30, lean=False).allocated <= limit]
    assert got == (max(brute) if brute else None)
    assert [m for m, _ in tried] == calls  # every probe recorded, in order
    if got is not None and got != cands[-1]:
        assert (cands[cands.index(got) + 1], False) in tried  # the next size up was tried and failed


def test_search_from_the_estimate_needs_few_probes():
    calls: list = []
    got, _ = search(divisors(576), fake_gpu(30.0, calls), start=32)
    assert got == 32 and calls == [32, 36]  # fits at the estimate, next size up does not


def test_cpu_rule():
    assert cpu_choice(576, 1024) == 8  # largest divisor with a row <= 8192 tokens
    assert cpu_choice(4, 128) == 4 and cpu_choice(7, 8192) == 1 and cpu_choice(9, 8192 * 2) == 1


def test_data_config_accepts_auto_and_rejects_other_words(tmp_path):
    raw = {"run_name": "t", "data": {"local": str(tmp_path), "microbatch_size": "auto", "global_batch_size": 64}}
    auto = from_dict(RunConfig, raw, "").data
    assert auto.microbatch_size == "auto"
    with pytest.raises(ValueError, match="auto has no row size until training resolves it"):
        auto.row_tokens
    with pytest.raises(ConfigError, match=r"data.microbatch_size: expected int or Literal"):
        from_dict(RunConfig, {**raw, "data": {**raw["data"], "microbatch_size": "max"}}, "").data
    with pytest.raises(ConfigError, match="data.microbatch_size: auto needs global_batch_size"):
        from_dict(RunConfig, {**raw, "data": {"local": str(tmp_path), "microbatch_size": "auto"}}, "").data


def _cfg(tmp_path, **data):
    raw = {"run_name": "t", "run_dir": str(tmp_path / "run"),
           "data": {"local": str(tmp_path), "max_seq_len": 1024, "microbatch_size": "auto", "global_batch_size": 4608, **data}}
    return from_dict(RunConfig, raw, "")


def test_gpu_choice_is_persisted_and_kept_on_resume(tmp_path):
    calls: list = []
    cfg = resolve_microbatch(_cfg(tmp_path), device="gpu", world_size=8, fits=fake_gpu(45.0, calls))
    assert cfg.data.microbatch_size == 48 and calls  # 48 x 1024 fits 45 GiB, 64 does not
    record = json.load(open(tmp_path / "run" / RECORD))
    assert record["microbatch_size"] == 48 and record["per_rank_batch"] == 576 and record["probes"]
    # the resume reads the record back: no probing, even where more memory would be free now
    again: list = []
    cfg2 = resolve_microbatch(_cfg(tmp_path), device="gpu", world_size=8, fits=fake_gpu(70.0, again))
    assert cfg2.data.microbatch_size == 48 and again == []
    with pytest.raises(ValueError, match="auto chose 48 .* does not divide the per-rank batch 100"):
        resolve_microbatch(_cfg(tmp_path, global_batch_size=800), device="gpu", world_size=8)


def test_numbers_pass_through_and_nothing_fits_is_one_line(tmp_path):
    cfg = _cfg(tmp_path, microbatch_size=16)
    assert resolve_microbatch(cfg, device="gpu", world_size=8) is cfg
    with pytest.raises(ValueError, match="auto found no row that fits"):
        resolve_microbatch(_cfg(tmp_path), device="gpu", world_size=8, fits=lambda mb: False)


def test_training_run_resolves_auto_on_cpu(tmp_path, data):
    cfg = run_config(tmp_path, data, max_duration="2ba")
    cfg["data"].update(microbatch_size="auto", global_batch_size=8)
    run = build_and_fit(cfg)
    assert run.cfg.data.microbatch_size == 8  # CPU rule: 8 x 128 = 1024 tokens <= 8192
    assert json.load(open(tmp_path / "run" / RECORD))["device"] == "cpu"
    recs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
    assert recs and all(r["data/rows_per_rank"] == 1.0 for r in recs)  # one row of 8 sequences per step


def test_probe_rows_train_the_real_model(tmp_path, data):
    """The GPU probe's synthetic row has the loader's format: the Composer model trains on it."""
    import torch

    from flexbert.train.recipe import build_model
    from flexbert.train.microbatch import synthetic_row

    cfg = from_dict(RunConfig, run_config(tmp_path, data), "")
    model = build_model(cfg).train()
    row = synthetic_row(cfg.data, cfg.model, 2, torch.device("cpu"), cfg.max_predicted_fraction())
    assert row["input_ids"].shape == (256,) and row["cu_seqlens"].tolist() == [0, 128, 256]
    assert row["num_masked"] == int((row["labels"] != -100).sum()) == 78  # ceil(256 x 0.30 x 1.01)
    loss = model.loss(model(row), row)
    loss.backward()
    assert torch.isfinite(loss) and model.model.decoder.bias.grad is not None


def test_with_microbatch_copies_the_config(tmp_path):
    from flexbert.train.run_folder import with_microbatch

    cfg = _cfg(tmp_path)
    assert with_microbatch(cfg, 24).data.microbatch_size == 24 and cfg.data.microbatch_size == "auto"


@pytest.mark.gpu
def test_auto_on_the_real_gpu_picks_a_row_that_fits_and_the_next_does_not(tmp_path):
    """The real probe (flexbert.train.microbatch.py), not a fake limit: under a 4 GiB memory cap the
    chosen row trains, the next divisor does not fit, and the probe leaves nothing allocated."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from flexbert.train.microbatch import cuda_fits

    model = dict(vocab_size=50368, hidden_size=256, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4)
    cfg = from_dict(RunConfig, {"run_name": "t", "run_dir": str(tmp_path / "run"), "model": model, "device": "gpu",
                                "data": {"local": str(tmp_path), "max_seq_len": 1024, "microbatch_size": "auto",
                                         "global_batch_size": 256}}, "")
    total = torch.cuda.get_device_properties(0).total_memory
    before = torch.cuda.memory_allocated()
    torch.cuda.set_per_process_memory_fraction(4 * 2**30 / total)
    try:
        chosen = resolve_microbatch(cfg, device="gpu", world_size=1).data.microbatch_size
        fits = cuda_fits(cfg, 0.0)
        bigger = [d for d in divisors(256) if d > chosen]
        assert fits(chosen) and bigger and not fits(bigger[0]), (chosen, bigger[:1])
        assert torch.cuda.memory_allocated() == before  # nothing left behind by the probes
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
