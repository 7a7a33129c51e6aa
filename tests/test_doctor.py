"""The throughput doctor (flexbert/train/doctor.py) on recorded timings, never on wall-clock shares
of a live run: a timeline of events gives the seconds per part worked out by hand, a run whose
clock the test drives gives exact totals in metrics.jsonl and the verdict, and scripts/diagnose.py
reads the run's totals (the last record), not its first record."""

import os
import sys

import pytest
from composer.core import Callback

from flexbert.train.doctor import diagnose, ledger, verdict
from test_train_fixtures import read_jsonl, run_config

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))


@pytest.mark.parametrize("seconds,word", [
    ({"data": 5, "step": 4, "eval": 0.5, "checkpoint": 0.5}, "data-bound"),
    ({"data": 1, "step": 4, "eval": 3, "checkpoint": 0}, "eval-bound"),
    ({"data": 0.5, "step": 6, "eval": 0.5, "checkpoint": 2}, "checkpoint-bound"),
    ({"data": 1, "step": 9, "eval": 0, "checkpoint": 0}, "compute-bound"),
])
def test_verdicts(seconds, word):
    assert verdict(seconds, {"num_workers": 0}).startswith(word)


def test_a_recorded_timeline_gives_the_seconds_worked_out_by_hand():
    """Two batches, an evaluation and a save after the second (clock in seconds):
    data 0.5 + (3 - 2) = 1.5; step (1.5 - 0.5) + (2 - 1.5) + (5 - 3) + (5.5 - 5) = 4;
    eval 9 - 5.5 = 3.5; checkpoint (1.5 - 1.5) + (10 - 9) = 1; 10 s in all."""
    timeline = [("fit_start", 0.0), ("before_dataloader", 0.0), ("after_dataloader", 0.5), ("batch_end", 1.5),
                ("batch_checkpoint", 1.5), ("before_dataloader", 2.0), ("after_dataloader", 3.0), ("batch_end", 5.0),
                ("eval_start", 5.5), ("eval_end", 9.0), ("batch_checkpoint", 10.0)]
    assert ledger(timeline) == {"data": 1.5, "step": 4.0, "eval": 3.5, "checkpoint": 1.0}
    assert verdict(ledger(timeline)).startswith(
        "eval-bound: 35% of the time in evaluation (data 15%, step 40%, eval 35%, checkpoint 10%)")


def test_diagnose_reads_the_runs_totals_not_its_first_record():
    """Timings in metrics.jsonl are cumulative: the first record (compute-bound) is not the run."""
    records = [{"kind": "train", "batch": 1, "timing/data_s": 0.1, "timing/step_s": 1.0, "timing/eval_s": 0.0,
                "timing/checkpoint_s": 0.0},
               {"kind": "train", "batch": 2, "metrics/eval/MLMLoss": 7.0},  # a record without timings
               {"kind": "train", "batch": 3, "timing/data_s": 6.1, "timing/step_s": 3.0, "timing/eval_s": 0.9,
                "timing/checkpoint_s": 0.0}]
    assert diagnose(records[:1]).startswith("compute-bound")
    assert diagnose(records).startswith("data-bound: 61% of the time waiting for the next batch")


class DrivenClock(Callback):
    """The ledger's clock, advanced by the test at known events: 3 s of waiting for each of batches
    4-6 (a data source slowed on purpose, only late in the run), 1 s per optimizer step, 0.5 s per
    evaluation batch.  Nothing else moves it, so the totals do not depend on the machine's load."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def before_dataloader(self, state, logger):  # runs after the ledger's: the wait is data time
        if 3 <= int(state.timestamp.batch) < 6:
            self.now += 3.0

    def before_train_batch(self, state, logger):
        self.now += 1.0

    def eval_batch_start(self, state, logger):
        self.now += 0.5


def test_a_run_on_a_driven_clock_logs_exact_totals_and_diagnose_reads_them(tmp_path, data, capsys):
    """6 batches, an evaluation (2 batches) every 2: at fit end data 9 s, step 6 s, eval 3 s (the
    evaluations at 2, 4 and 6).  Each batch's record is written after its evaluation and its save
    (BATCH_CHECKPOINT), and fit end writes the totals once more, so the last record holds data 9,
    step 6, eval 3 and diagnose says what the end-of-run verdict said (50% data-bound); the first
    record is all step (compute-bound)."""
    from diagnose import main

    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    cfg = run_config(tmp_path, data, max_duration="6ba", eval_interval="2ba", eval_subset_num_batches=2)
    clock = DrivenClock()
    run = build_trainer(from_dict(RunConfig, cfg, ""), extra_callbacks=[clock])
    run.callbacks["doctor"].clock = clock
    try:
        run.fit()
    finally:
        run.close()
    assert run.callbacks["doctor"].seconds == {"data": 9.0, "step": 6.0, "eval": 3.0, "checkpoint": 0.0}
    assert ("[doctor] data-bound: 50% of the time waiting for the next batch (data 50%, step 33%, eval 17%, "
            "checkpoint 0%)") in capsys.readouterr().out
    timed = [r for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if "timing/step_s" in r]
    assert [r["batch"] for r in timed] == [1, 2, 3, 4, 5, 6, 6]  # the last: fit end's totals
    assert {k: timed[0][f"timing/{k}_s"] for k in ("data", "step", "eval", "checkpoint")} == \
        {"data": 0.0, "step": 1.0, "eval": 0.0, "checkpoint": 0.0}
    assert {k: timed[-2][f"timing/{k}_s"] for k in ("data", "step", "eval", "checkpoint")} == \
        {"data": 9.0, "step": 6.0, "eval": 3.0, "checkpoint": 0.0}  # batch 6, after its evaluation
    assert {k: v for k, v in timed[-1].items() if k.startswith("timing/")} == \
        {k: v for k, v in timed[-2].items() if k.startswith("timing/")}  # fit end: the same totals
    assert main([cfg["run_dir"]]) == 0
    said = capsys.readouterr().out
    assert "data-bound: 50% of the time waiting for the next batch (data 50%, step 33%, eval 17%, checkpoint 0%)" in said
