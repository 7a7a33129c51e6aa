"""Each schedule against its closed-form formula, on a real Composer State, at sampled token times.

(The same schedules are checked inside a real training run, under batch-size warmup, in
tests/test_train_schedule.py.)
"""

import math

import pytest
import torch
from composer.core import State, Timestamp
from composer.devices import DeviceCPU

from flexbert.config import ConfigError, parse_time
from flexbert.train.schedulers import SCHEDULERS, parse_scheduler

MAX_TOK = 1_000_000


def make_state(max_duration=f"{MAX_TOK}tok"):
    return State(model=torch.nn.Linear(2, 2), rank_zero_seed=0, run_name="t", device=DeviceCPU(), max_duration=max_duration)


def at(state, tokens, batch=0):
    state.timestamp = Timestamp(token=tokens, batch=batch)
    return state


SAMPLES = [0, 1, 999, 50_000, 100_000, 100_001, 333_333, 500_000, 799_999, 800_000, 850_000, 912_345, 999_999, MAX_TOK]


def wsd_expected(t, warm, decay_len, shape, alpha_f, t_max=MAX_TOK):
    w = min(t / warm, 1.0) if warm else 1.0
    start = t_max - decay_len
    if t <= start:
        return w
    frac = min((t - start) / decay_len, 1.0)
    g = {"linear": 1 - frac, "one_minus_sqrt": 1 - math.sqrt(frac), "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[shape]
    return w * (alpha_f + (1 - alpha_f) * g)


@pytest.mark.parametrize("shape", ["linear", "one_minus_sqrt", "cosine"])
def test_warmup_stable_decay(shape):
    sched = parse_scheduler({"name": "warmup_stable_decay", "t_warmup": "100Ktok", "t_decay": "0.2dur",
                             "decay_shape": shape, "alpha_f": 0.001})
    state = make_state()
    for t in SAMPLES:
        got = sched(at(state, t))
        assert got == pytest.approx(wsd_expected(t, 100_000, 200_000, shape, 0.001), abs=1e-12), t
    # the paper's formula, spelled out at one point: lr = peak*(alpha_f + (1-alpha_f)*(1-sqrt(frac)))
    if shape == "one_minus_sqrt":
        frac = (900_000 - 800_000) / 200_000
        assert sched(at(state, 900_000)) == pytest.approx(0.001 + 0.999 * (1 - math.sqrt(frac)))
        assert sched(at(state, MAX_TOK)) == pytest.approx(0.001)


def test_one_minus_sqrt():
    sched = parse_scheduler({"name": "one_minus_sqrt", "alpha_f": 0.001})
    state = make_state()
    for t in SAMPLES:
        assert sched(at(state, t)) == pytest.approx(0.001 + 0.999 * (1 - math.sqrt(t / MAX_TOK)), abs=1e-12)


def test_constant_with_warmup_in_tokens_ignores_batches():
    sched = parse_scheduler({"name": "constant_with_warmup", "t_warmup": "250Ktok"})
    state = make_state()
    for t in SAMPLES:
        # the batch count is deliberately unrelated: only tokens may matter
        assert sched(at(state, t, batch=t // 7)) == pytest.approx(min(t / 250_000, 1.0), abs=1e-12)


def test_cosine_with_warmup():
    sched = parse_scheduler({"name": "cosine_with_warmup", "t_warmup": "100000tok", "alpha_f": 0.1})
    state = make_state()
    for t in SAMPLES:
        if t < 100_000:
            want = t / 100_000
        else:
            frac = (t - 100_000) / (MAX_TOK - 100_000)
            want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        assert sched(at(state, t)) == pytest.approx(want, abs=1e-12), t


def test_batch_units_and_dur():
    sched = parse_scheduler({"name": "warmup_stable_decay", "t_warmup": "10ba", "t_decay": "20ba",
                             "decay_shape": "linear", "t_max": "100ba"})
    state = make_state("100ba")
    assert sched(at(state, 0, batch=5)) == pytest.approx(0.5)
    assert sched(at(state, 0, batch=50)) == pytest.approx(1.0)
    assert sched(at(state, 0, batch=90)) == pytest.approx(0.5)


def test_registry_and_bad_specs():
    assert set(SCHEDULERS.choices) >= {"warmup_stable_decay", "one_minus_sqrt", "constant_with_warmup", "cosine_with_warmup"}
    with pytest.raises(ConfigError, match="did you mean 'one_minus_sqrt'"):
        parse_scheduler({"name": "one_minus_sqr"})
    with pytest.raises(ConfigError, match="unknown config key 'scheduler.t_warmpu'.*did you mean 't_warmup'"):
        parse_scheduler({"name": "constant_with_warmup", "t_warmpu": "10ba"})
    with pytest.raises(ConfigError, match="decay_shape"):
        parse_scheduler({"name": "warmup_stable_decay", "decay_shape": "exp"})
    with pytest.raises(ConfigError, match="scheduler.t_warmup: expected str"):
        parse_scheduler({"name": "constant_with_warmup", "t_warmup": 100})


def test_parse_time():
    assert parse_time("3Btok") == (3e9, "tok")
    assert parse_time("1_719Btok") == (1.719e12, "tok")
    assert parse_time("0.1dur") == (0.1, "dur")
    assert parse_time("500ba") == (500, "ba")
    with pytest.raises(ConfigError):
        parse_time("1.5ba")
    with pytest.raises(ConfigError):
        parse_time("2dur")
