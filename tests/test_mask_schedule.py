"""The masking rate as a schedule (flexbert/data/mask_schedule.py): the loader masks each step at
the scheduled rate (realised fraction within 0.02), a resumed loader masks exactly as the
uninterrupted one, training logs the rate in force every step, and bad schedules are one line."""

import os

import pytest
import torch

from flexbert.config import from_dict
from flexbert.data.config import DataConfig
from flexbert.data.mask_schedule import MaskSchedule, parse_mask_schedule
from flexbert.registry import ConfigError

SCHEDULE = {"start": 0.4, "end": 0.1, "shape": "linear", "tokens": 8 * 32 * 128}  # over 8 steps of 32 x 128 tokens


def test_shapes():
    lin, cos, step = (MaskSchedule(0.3, 0.1, s, 1000) for s in ("linear", "cosine", "step"))
    assert lin.rate(0) == 0.3 and lin.rate(500) == pytest.approx(0.2) and lin.rate(5000) == pytest.approx(0.1)
    assert cos.rate(0) == 0.3 and cos.rate(500) == pytest.approx(0.2) and cos.rate(250) > lin.rate(250)
    assert step.rate(999) == 0.3 and step.rate(1000) == 0.1
    assert parse_mask_schedule(0.3) == MaskSchedule(0.3, 0.3)


@pytest.mark.parametrize("value,message", [
    (1.2, "data.mlm_probability: a masking rate must be a number in (0, 1), got 1.2"),
    ({"start": 0.3, "end": 0.1, "tokens": "2ep"}, "data.mlm_probability.tokens: the span of the schedule: tokens (2000000, 2B, 2Btok), batches (1000ba) or a fraction of the phase (0.5dur), got '2ep'"),
    ({"start": 0.3, "end": 0.1, "tokens": "1.5"}, "data.mlm_probability.tokens: the span of the schedule"),
    ({"start": 0.3, "end": 0.1, "tokens": 10, "shape": "exp"}, "data.mlm_probability.shape: unknown shape 'exp'; valid choices: linear, cosine, step"),
    ({"start": 0.3, "end": 0, "tokens": 10}, "data.mlm_probability.end: a masking rate must be a number in (0, 1), got 0"),
    ({"start": 0.3, "end": 0.1, "tokens": 10, "steps": 3}, "data.mlm_probability.steps: unknown key"),
])
def test_bad_schedules_are_one_line(value, message):
    with pytest.raises(ConfigError) as e:
        from_dict(DataConfig, {"local": "x", "mlm_probability": value}, "data")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("tokens,span,unit", [(None, 1.0, "dur"), (2000, 2000, "tok"), ("2B", 2e9, "tok"),
                                                ("2Btok", 2e9, "tok"), ("1000ba", 1000, "ba"), ("0.5dur", 0.5, "dur")])
def test_the_span_takes_the_trainers_duration_forms_and_defaults_to_the_phase(tokens, span, unit):
    value = {"start": 0.3, "end": 0.15, **({} if tokens is None else {"tokens": tokens})}
    sched = parse_mask_schedule(value)
    assert (sched.span, sched.unit) == (span, unit)
    resolved = sched.for_phase((4000, "tok"))  # a fraction is taken of max_duration, the rest stay
    assert (resolved.span, resolved.unit) == ((span * 4000, "tok") if unit == "dur" else (span, unit))
    assert sched.for_phase((8, "ba")).rate(0, 0) == 0.3


def test_a_schedule_over_the_phase_needs_max_duration_in_tok_or_ba():
    from flexbert.train.config import load_run_config

    with pytest.raises(ConfigError, match="data.mlm_probability.tokens: a schedule over the phase needs max_duration in tok or ba"):
        load_run_config(None, ["data.local=x", "max_duration=2ep", "data.mlm_probability={start: 0.3, end: 0.15}"])
    assert load_run_config(None, ["data.local=x", "max_duration=2ep", "data.mlm_probability={start: 0.3, end: 0.15, tokens: 1000ba}"])


def _loader(data, **kw):
    from flexbert.data.loader import build_train_loader

    cfg = from_dict(DataConfig, {"local": data, "max_seq_len": 128, "microbatch_size": 8, "global_batch_size": 32,
                                 "num_workers": 0, "doc_batch_size": 32, "packer_buffer_size": 64,
                                 "mlm_probability": SCHEDULE, **kw}, "data")
    return build_train_loader(cfg), cfg


def _masked(batch):
    return [r["labels"].tolist() for r in batch["rows"]]


def _realised(batch, never) -> float:
    """Masked tokens / tokens that may be masked (real, not special): the rate a step realised."""
    masked = eligible = 0
    for r in batch["rows"]:
        labels, ids = r["labels"], r["input_ids"]
        original = ids.where(labels == -100, labels)[: r["num_tokens"]]
        eligible += int((~torch.from_numpy(never)[original]).sum())
        masked += int((labels != -100).sum())
    return masked / eligible


def test_each_step_is_masked_at_the_scheduled_rate_and_a_resume_masks_the_same(data):
    loader, cfg = _loader(data)
    never = loader.special.special_mask()
    it = iter(loader)
    seen, batches = 0, []
    for _ in range(8):
        batch = next(it)
        want = cfg.mask_schedule.rate(seen)
        assert batch["mlm_probability"] == pytest.approx(want)
        assert abs(_realised(batch, never) - want) < 0.02, (seen, want)
        seen = loader.tokens_seen
        batches.append(batch)
        if len(batches) == 3:
            state = loader.state_dict()
    assert batches[0]["mlm_probability"] == 0.4 and batches[-1]["mlm_probability"] < 0.15
    resumed, _ = _loader(data)
    resumed.load_state_dict(state)
    again = iter(resumed)
    for b in batches[3:]:
        assert _masked(next(again)) == _masked(b)


def test_a_schedule_without_tokens_trains_over_the_phase_and_logs_the_rate_in_force(tmp_path, data):
    """{start, end, shape} without tokens spans the phase (max_duration: 6ba): the rate falls from
    start at the first batch by a sixth of the way each batch."""
    from test_train_fixtures import build_and_fit, read_jsonl, run_config

    cfg = run_config(tmp_path, data, max_duration="6ba")
    cfg["data"].update(mlm_probability={"start": 0.4, "end": 0.1, "shape": "linear"}, microbatch_size=8, global_batch_size=32)
    build_and_fit(cfg)
    recs = [r for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if "data/mlm_probability" in r]
    assert [r["batch"] for r in recs] == [1, 2, 3, 4, 5, 6]
    for r in recs:
        assert r["data/mlm_probability"] == pytest.approx(0.4 - 0.3 * (r["batch"] - 1) / 6)
    fractions = [r["data/masked_fraction"] for r in recs]  # masked / real tokens ([CLS]/[SEP] never masked)
    assert fractions[0] > fractions[-1] + 0.15
