"""scripts/bench_pretraining.py: FlexBERT against transformers' Trainer, scored by one evaluator.

* the evaluator is shared: ONE model's weights, exported by FlexBERT (a train.py checkpoint through
  its export) and saved by the transformers side (``ModernBertForMaskedLM`` + the leg's own
  ``save_checkpoint``), get the same held-out loss on the same masked positions;
* the speedup reads the curves the right way round (> 1 when FlexBERT reaches transformers' final
  held-out loss sooner);
* the command, end to end on a tiny budget, writes result.json, table.md and both plots (no timing
  is asserted); ``--help`` documents every option; bad input is one line, exit 2, nothing written
  (these two in this process, through the command's ``main``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from test_train_fixtures import ROOT, model_overrides

SCRIPT = os.path.join(ROOT, "scripts", "bench_pretraining.py")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")


def test_both_stacks_exports_of_one_model_get_the_same_loss(trained, data, tmp_path):
    from transformers import AutoTokenizer, ModernBertForMaskedLM

    from flexbert.experiments.pretraining_bench import BenchOptions, evaluate_folder
    from flexbert.experiments.trainer_leg import save_checkpoint
    from flexbert.weights.export import export_to_hf
    from flexbert.train.run_folder import RunFolder

    cfg, _ = trained
    ckpt = RunFolder(cfg["run_dir"]).newest_checkpoint()
    flex = str(tmp_path / "flexbert")
    export_to_hf(flex, checkpoint=ckpt, pooling="none")  # what the benchmark does with FlexBERT's checkpoints
    hf = str(tmp_path / "transformers")
    model = ModernBertForMaskedLM.from_pretrained(flex)  # the same weights, now a transformers model
    save_checkpoint(model, AutoTokenizer.from_pretrained(flex), hf)  # what the Trainer leg saves
    o = BenchOptions(config="", data=data, tokens=1, seeds=[0], out=str(tmp_path / "unused"))
    a, b = evaluate_folder(flex, o), evaluate_folder(hf, o)
    assert a["masked_tokens"] == b["masked_tokens"] > 100
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert 1.0 < a["loss"] < 10.0


def test_speedup_is_baseline_seconds_over_flexbert_seconds_to_the_baseline_final_loss():
    from flexbert.experiments.bench_report import leg_summary, summarize, time_to_loss

    def leg(points):
        return leg_summary([{"tokens": t, "seconds": s, "loss": loss} for t, s, loss in points], {})

    # transformers ends at loss 5.0 after 100 s; FlexBERT passes 5.0 halfway between 30 s (5.2) and 50 s (4.8)
    curves = {"flexbert": {1: leg([(100, 30, 5.2), (200, 50, 4.8), (300, 70, 4.6)])},
              "transformers": {1: leg([(100, 40, 6.0), (200, 70, 5.5), (300, 100, 5.0)])}}
    r = summarize(curves, "transformers", [100, 200, 300], {})
    assert r["speedup"] == pytest.approx(100 / 40)
    assert r["speedup_per_seed"] == {"1": pytest.approx(2.5)}
    assert r["stacks"]["transformers"]["legs"]["1"]["to_other_final"] is None  # never reaches 4.6
    assert r["stacks"]["flexbert"]["loss_at_tokens"]["200"] == pytest.approx(4.8)
    assert time_to_loss(curves["flexbert"][1]["points"], 5.3)["upper_bound"] is True
    # a seed where FlexBERT never gets to transformers' final loss leaves the mean and is counted out
    curves["flexbert"][2] = leg([(100, 30, 6.2), (200, 50, 5.8), (300, 70, 5.6)])
    curves["transformers"][2] = leg([(100, 40, 6.0), (200, 70, 5.5), (300, 100, 5.0)])
    r = summarize(curves, "transformers", [100, 200, 300], {})
    assert r["speedup"] == pytest.approx(2.5) and r["speedup_per_seed"]["2"] is None and r["speedup_seeds_reached"] == 1


@pytest.fixture(scope="module")
def bench(data, tmp_path_factory):
    """The command end to end: tiny model, 2,000 tokens, one seed, both legs side by side."""
    tmp = tmp_path_factory.mktemp("bench")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 7, "model": model_overrides(),
        "data": {"max_seq_len": 128, "microbatch_size": 2, "global_batch_size": 4, "num_workers": 0, "doc_batch_size": 32,
                 "packer_buffer_size": 64, "mlm_probability": 0.3},
        "optimizer": {"name": "stable_adamw", "lr": 2e-3, "weight_decay": 1e-5},
        "scheduler": {"name": "warmup_stable_decay", "t_warmup": "512tok", "t_decay": "0.2dur", "alpha_f": 0.01},
        "loggers": {"console": False}}))
    out = tmp / "out"
    p = subprocess.run([sys.executable, SCRIPT, "--config", str(config), "--data", data, "--tokens", "2K", "--seeds", "17",
                        "--points", "2", "--parallel", "2", "--threads", "1", "--eval-max-batches", "4", "--out", str(out)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-2000:]
    return out, p.stdout


@pytest.mark.slow
def test_end_to_end_writes_result_table_and_plots(bench):
    from flexbert.experiments.plots import is_png

    out, stdout = bench
    r = json.loads((out / "result.json").read_text())
    assert set(r["stacks"]) == {"flexbert", "transformers"}
    # FlexBERT stops at the first step past the budget; the Trainer at max_steps = budget / the shards'
    # mean tokens per step, so on 4 steps its sample of documents can fall short by a few percent
    for name, stack in r["stacks"].items():
        leg = stack["legs"]["17"]
        assert len(leg["points"]) == 2 and leg["tokens"] >= (2000 if name == "flexbert" else 1600)
        assert all(p["loss"] > 0 and p["seconds"] > 0 for p in leg["points"])
        assert leg["peak_rss_mb"] > 0
    assert "speedup" in r and "speedup_per_seed" in r  # a number, or None when FlexBERT never got there
    assert r["load"]["samples"] >= 0 and r["machine"]["cores"] >= 1
    table = (out / "table.md").read_text()
    assert "| flexbert |" in table and "| transformers |" in table and "speedup" in table
    assert is_png(str(out / "loss_vs_tokens.png")) and is_png(str(out / "loss_vs_seconds.png"))
    assert "speedup" in stdout


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    """The command in this process (argparse's refusals exit; the command's return its code)."""
    from flexbert.cli.bench_pretraining import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_documents_every_option(capsys):
    from flexbert.cli.bench_pretraining import parser

    code, out, _ = _main(["--help"], capsys)
    assert code == 0
    for action in parser()._actions:
        assert action.help, f"{action.dest} has no help"
        assert any(flag in out for flag in action.option_strings or [action.metavar or action.dest])


@pytest.mark.parametrize("args, says", [
    (["--tokens", "2X"], "--tokens"),
    (["--data", "/nonexistent/shards"], "--data /nonexistent/shards"),
    (["--stacks", "flexbert", "keras"], "--stacks"),
    (["--config", "/nonexistent.yaml"], "--config"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(args, says, data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _main(["--data", data, "--out", str(out), "--tokens", "2K", *args], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], err
    assert not out.exists()
