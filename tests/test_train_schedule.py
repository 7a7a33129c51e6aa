"""Inside a real run with batch-size warmup (rows per step grow), the LR of every step is the
schedule's formula at the tokens seen before that step -- not at a step count."""

import math

import pytest
from composer.core import Callback

from test_train_fixtures import build_and_fit, data_dir, run_config

PEAK = 1e-3
WARM = 3000
MAX = 9000
ALPHA = 0.05


class Record(Callback):
    """Per step: tokens before it, rows in it, and the LR the optimizer applies to it."""

    def __init__(self):
        self.steps = []

    def after_train_batch(self, state, logger):  # after backward, before optimizer.step
        self.steps.append((int(state.timestamp.token), len(state.batch["rows"]),
                           state.optimizers[0].param_groups[0]["lr"]))


def expected(tokens: float) -> float:
    # warmup_stable_decay, written out independently of flexbert.train.schedulers
    warm = min(tokens / WARM, 1.0)
    start = MAX - 0.5 * MAX
    if tokens <= start:
        return PEAK * warm
    frac = min((tokens - start) / (0.5 * MAX), 1.0)
    return PEAK * warm * (ALPHA + (1 - ALPHA) * (1 - math.sqrt(frac)))


@pytest.mark.parametrize("shape", ["one_minus_sqrt"])
def test_schedule_in_tokens_under_batch_size_warmup(tmp_path_factory, shape):
    data = data_dir(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("sched")
    cfg = run_config(tmp, data, max_duration=f"{MAX}tok", save_folder="",
                     optimizer={"lr": PEAK, "max_lr": PEAK},
                     scheduler={"name": "warmup_stable_decay", "t_warmup": f"{WARM}tok", "t_decay": "0.5dur",
                                "decay_shape": shape, "alpha_f": ALPHA})
    # rows of 2 x 128 tokens; the global batch grows 2 -> 4 -> 6 -> 8 sequences over 4K tokens
    cfg["data"] = {**cfg["data"], "global_batch_size": 8, "batch_size_warmup_min": 2, "batch_size_warmup_tokens": 4000}
    rec = Record()
    build_and_fit(cfg, extra_callbacks=[rec])
    rows = [r for _, r, _ in rec.steps]
    assert rows[0] == 1 and rows[-1] == 4 and sorted(rows) == rows and len(set(rows)) == 4, rows
    assert rec.steps[-1][0] < MAX <= rec.steps[-1][0] + 4 * 256  # stopped at the token budget
    for tokens, _, lr in rec.steps:
        assert lr == pytest.approx(expected(tokens), rel=1e-9, abs=1e-15), (tokens, lr)
    # the decay really happened in the sampled steps
    assert rec.steps[-1][2] < 0.5 * PEAK and max(lr for *_, lr in rec.steps) == pytest.approx(PEAK, rel=0.02)
