"""The throughput doctor (flexbert/train/doctor.py): a data source slowed on purpose is called
data-bound, a normal run is not, and scripts/diagnose.py reads the same verdict from the run folder."""

import os
import sys
import time

import pytest
from composer.core import Callback

from flexbert.train.doctor import verdict
from test_train_fixtures import build_and_fit, run_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))


class SlowData(Callback):
    """Makes every batch wait: the data source slowed on purpose."""

    def before_dataloader(self, state, logger):
        time.sleep(0.5)


@pytest.mark.parametrize("seconds,word", [
    ({"data": 5, "step": 4, "eval": 0.5, "checkpoint": 0.5}, "data-bound"),
    ({"data": 1, "step": 4, "eval": 3, "checkpoint": 0}, "eval-bound"),
    ({"data": 0.5, "step": 6, "eval": 0.5, "checkpoint": 2}, "checkpoint-bound"),
    ({"data": 1, "step": 9, "eval": 0, "checkpoint": 0}, "compute-bound"),
])
def test_verdicts(seconds, word):
    assert verdict(seconds, {"num_workers": 0}).startswith(word)


def _run(tmp_path, data, name, extra=None):
    cfg = run_config(tmp_path / name, data, max_duration="6ba")
    build_and_fit(cfg, extra_callbacks=extra)
    return cfg["run_dir"]


def test_a_slowed_data_source_is_data_bound_and_a_normal_run_is_not(tmp_path, data, capsys):
    from diagnose import main

    slow = _run(tmp_path, data, "slow", [SlowData()])
    assert "[doctor] data-bound" in capsys.readouterr().out
    normal = _run(tmp_path, data, "normal")
    out = capsys.readouterr().out
    assert "[doctor]" in out and "data-bound" not in out
    assert main([slow]) == 0 and "data-bound" in capsys.readouterr().out
    assert main([normal]) == 0 and "data-bound" not in capsys.readouterr().out

