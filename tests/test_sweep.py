"""Sweeps: expansion and naming, emitted commands, skip-finished / resume-interrupted with real
train.py runs, aggregation of metric files into the table, and the PNG plots."""

import json
import os
import struct
import subprocess

import pytest
import yaml

from flexbert.experiments import sweep as S
from flexbert.experiments import report as R
from flexbert.experiments import results as Res
from flexbert.experiments.plots import is_png
from flexbert.eval.evaluation import Result, write_result
from test_train_fixtures import ROOT, read_jsonl, run_config


def sweep_file(tmp_path, body: dict, base: dict | None = None) -> str:
    base_path = tmp_path / "base.yaml"
    base_path.write_text(yaml.safe_dump(base or {"run_name": "x"}))
    body = {"base": "base.yaml", "out": str(tmp_path / "out"), **body}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return str(path)


def names_and_overrides(sweep):
    return [(r.name, r.group, r.overrides) for r in sweep.runs]


def test_grid_expansion(tmp_path):
    sw = S.load_sweep(sweep_file(tmp_path, {"grid": {"optimizer.lr": [1e-3, 3e-3], "seed": [1, 2]}}))
    assert names_and_overrides(sw) == [
        ("lr-0.001_seed-1", "lr-0.001", {"optimizer.lr": 1e-3, "seed": 1}),
        ("lr-0.001_seed-2", "lr-0.001", {"optimizer.lr": 1e-3, "seed": 2}),
        ("lr-0.003_seed-1", "lr-0.003", {"optimizer.lr": 3e-3, "seed": 1}),
        ("lr-0.003_seed-2", "lr-0.003", {"optimizer.lr": 3e-3, "seed": 2}),
    ]


def test_list_expansion_with_names_and_colliding_keys(tmp_path):
    sw = S.load_sweep(sweep_file(tmp_path, {"list": [{}, {"model.norm": "rmsnorm"}, {"name": "wide", "model.hidden_size": 256},
                                                     {"data.seed": 3}, {"seed": 4}]}))
    assert names_and_overrides(sw) == [
        ("base", "base", {}),
        ("norm-rmsnorm", "norm-rmsnorm", {"model.norm": "rmsnorm"}),
        ("wide", "wide", {"model.hidden_size": 256}),
        ("data.seed-3", "data.seed-3", {"data.seed": 3}),  # 'seed' is two keys' last part: the full key names it
        ("base_seed-4", "base", {"seed": 4}),
    ]


def test_list_times_grid(tmp_path):
    sw = S.load_sweep(sweep_file(tmp_path, {"list": [{}, {"name": "gelu", "model.mlp": "mlp"}],
                                            "grid": {"seed": [17, 18], "data.mlm_probability": [0.15]}}))
    assert names_and_overrides(sw) == [
        ("mlm_probability-0.15_seed-17", "mlm_probability-0.15", {"seed": 17, "data.mlm_probability": 0.15}),
        ("mlm_probability-0.15_seed-18", "mlm_probability-0.15", {"seed": 18, "data.mlm_probability": 0.15}),
        ("gelu_mlm_probability-0.15_seed-17", "gelu_mlm_probability-0.15", {"model.mlp": "mlp", "seed": 17, "data.mlm_probability": 0.15}),
        ("gelu_mlm_probability-0.15_seed-18", "gelu_mlm_probability-0.15", {"model.mlp": "mlp", "seed": 18, "data.mlm_probability": 0.15}),
    ]


def test_emit_and_finetune_commands(tmp_path):
    sw = S.load_sweep(sweep_file(tmp_path, {"fixed": {"max_duration": "2Mtok"}, "grid": {"model.norm": ["rmsnorm"]}}))
    assert S.emit(sw) == [f"composer train.py {tmp_path / 'base.yaml'} max_duration=2Mtok model.norm=rmsnorm "
                          f"run_name=norm-rmsnorm run_dir={tmp_path / 'out' / 'norm-rmsnorm'} loggers.wandb_group={sw.name}"]
    assert S.load_run_config(sw.base, [*S.train_overrides(sw, sw.runs[0]), "data.local=x"]).loggers.wandb_group == sw.name
    ft = tmp_path / "ft.yaml"
    ft.write_text(yaml.safe_dump({"kind": "finetune", "out": "o", "fixed": {"model": "runs/demo/run", "text_columns": ["a", "b"]},
                                  "grid": {"lr": [5e-5], "seed": [1]}}))
    assert S.emit(S.load_sweep(str(ft))) == [
        "flexbert finetune --model runs/demo/run --text-columns a b --lr 5e-05 --seed 1 --out o/lr-5e-05_seed-1 --overwrite"]


@pytest.mark.parametrize("body,message", [
    ({"grdi": {}}, "unknown key 'grdi'; valid keys: name, kind, base, out, fixed, list, grid, seed_key, metric"),
    ({"kind": "pretrain"}, "kind: unknown value 'pretrain'; valid choices: train, finetune"),
    ({"grid": {"seed": []}}, "grid.seed: expected a non-empty list of values"),
    ({"base": "missing.yaml"}, "base: {tmp}/missing.yaml does not exist"),
    ({"list": [{"seed": 1}, {"seed": 1}]}, "list/grid: two runs would both be named 'base_seed-1'; give the list entries a name:"),
])
def test_bad_sweep_files(tmp_path, body, message):
    path = sweep_file(tmp_path, body)
    with pytest.raises(S.SweepError) as e:
        S.load_sweep(path)
    assert str(e.value) == f"{path}: " + message.format(tmp=tmp_path)


def test_bad_override_fails_before_running(tmp_path, data):
    path = sweep_file(tmp_path, {"grid": {"model.norm": ["rmsnrom"]}}, base=run_config(tmp_path, data))
    with pytest.raises(S.SweepError, match=r"run norm-rmsnrom: model.norm: unknown norm 'rmsnrom' \(did you mean 'rmsnorm'\?\)"):
        S.validate(S.load_sweep(path))


def test_skip_finished_and_resume_interrupted(tmp_path, data, capsys):
    cfg = run_config(tmp_path, data, save_interval="2ba", loggers={"console": True, "console_interval": 1, "jsonl": True})
    path = sweep_file(tmp_path, {"fixed": {"max_duration": "4ba"}, "grid": {"seed": [1, 2]}}, base=cfg)
    sw = S.load_sweep(path)
    first, second = sw.runs
    # 'interrupted': the first run's own command stopped after 2 batches (a checkpoint at ba2)
    cmd = S.command(sw, first) + ["max_duration=2ba"]
    env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert [S.status(sw, r) for r in sw.runs] == ["partial", "new"]
    assert S.run_all(sw, parallel=2) == []
    out = capsys.readouterr().out
    assert "seed-1: started before, resuming" in out and "seed-2: done" in out
    log = open(S.log_path(sw, first)).read()
    assert "(resumed at batch 2)" in log
    recs = read_jsonl(os.path.join(S.run_dir(sw, first), "metrics.jsonl"))
    assert [r["batch"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4]  # each batch once
    assert [S.status(sw, r) for r in sw.runs] == ["done", "done"]
    # a re-run starts nothing
    assert S.run_all(sw) == []
    out = capsys.readouterr().out
    assert out.count("already done, skipped") == 2 and "running" not in out
    assert open(S.log_path(sw, first)).read() == log
    # the CLI reports on the finished sweep
    from flexbert.cli.sweep import main  # what scripts/sweep.py runs; in this process (another costs ~15 s)

    assert main([path]) == 0
    out = capsys.readouterr().out
    assert "| base | 2/2 |" in out and "already done, skipped" in out
    for png in ("loss_curves.png", "final_metric.png"):
        assert is_png(os.path.join(sw.out, png))


def fake_run(folder, losses, evals, extra=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for i, loss in enumerate(losses, 1):
            rec = {"kind": "train", "batch": i, "tokens": 1000 * i, "time": float(i), "loss/train/total": loss}
            if i in evals:
                rec.update({"metrics/eval/MLMLoss": evals[i], "metrics/eval/MLMAccuracy": 0.5})
            f.write(json.dumps(rec) + "\n")
        f.write('{"kind": "train", "batch": 99, "loss/tr')  # a line cut by a crash is ignored
    if extra:  # an evaluation's result.json (the one shape every evaluation writes)
        write_result(folder, Result(task="classification", model={}, settings={}, metrics=extra))


def test_aggregation_table_csv_and_pngs(tmp_path):
    sw = S.load_sweep(sweep_file(tmp_path, {"list": [{}, {"name": "rms", "model.norm": "rmsnorm"}], "grid": {"seed": [1, 2]}}))
    out = sw.out
    fake_run(f"{out}/base_seed-1", [9.0] * 10 + [4.0] * 10, {10: 5.0, 20: 3.0})
    fake_run(f"{out}/base_seed-2", [9.0] * 10 + [5.0] * 10, {20: 3.5})
    fake_run(f"{out}/rms_seed-1", [9.0] * 20, {20: 2.0})
    with open(f"{out}/base_seed-1/{S.DONE}", "w") as f:
        json.dump({"command": S.command_args(sw, sw.runs[0])}, f)
    results = S.collect(sw)
    assert [r.status for r in results] == ["done", "partial", "partial", "new"]
    assert results[0].summary == {"tokens": 20000.0, "steps": 20.0, "seconds": 20.0, "train_loss": 4.0,
                                  "eval_loss": 3.0, "eval_accuracy": 0.5}
    assert results[0].eval_curve == [(10000.0, 5.0), (20000.0, 3.0)]
    assert R.markdown_table(results, "eval_loss", ["train_loss"]) == (
        "| variant | runs done | eval_loss (mean ± sd) | per seed | vs base | train_loss (mean) |\n"
        "|---|---|---|---|---|---|\n"
        "| base | 1/2 | 3.2500 ± 0.3536 | 3.0000, 3.5000* | – | 4.5000 |\n"
        "| rms | 0/2 | 2.0000 | 2.0000* | -1.2500 | 9.0000 |\n"
        "\neval_loss: lower is better; sd over the group's seeds. * = unfinished run (its latest value).\n")
    paths = S.report(sw)
    rows = open(paths["results.csv"]).read().splitlines()
    assert rows[0] == "run,group,status,seed,model.norm,tokens,steps,seconds,train_loss,eval_loss,eval_accuracy"
    assert rows[1] == "base_seed-1,base,done,1,,20000,20.0000,20.0000,4.0000,3.0000,0.5000"
    assert rows[4] == "rms_seed-2,rms,new,2,rmsnorm,,,,,,"
    for name in ("loss_curves.png", "final_metric.png"):
        assert is_png(paths[name])
        with open(paths[name], "rb") as f:
            width, height = struct.unpack(">II", f.read(24)[16:24])
        assert width > 300 and height > 200
    paths = S.report(sw, done_only=True)  # unfinished runs left out
    assert [line.split(",")[0] for line in open(paths["results.csv"]).read().splitlines()] == ["run", "base_seed-1"]
    for name in ("loss_curves.png", "final_metric.png"):
        assert is_png(paths[name])


def test_finetune_results_are_read(tmp_path):
    fake_run(str(tmp_path / "r"), [0.7, 0.3], {}, {"validation": {"accuracy": 0.9, "f1": 0.8}, "test": {"accuracy": 0.85}})
    summary, curve, _ = Res.summarize(str(tmp_path / "r"))
    assert summary["validation_accuracy"] == 0.9 and summary["test_accuracy"] == 0.85 and curve == [(1000.0, 0.7), (2000.0, 0.3)]
    result = Res.RunResult("r", "r", {}, "done", summary)
    assert Res.default_metric([result]) == "validation_accuracy" and not Res.lower_is_better("validation_accuracy")



def test_a_variant_whose_settings_changed_is_moved_aside_and_rerun(tmp_path, data, capsys):
    """Editing the base config changes a finished variant's model: the sweep does not report the old
    results under the new settings; it keeps the old run aside and trains the variant again."""
    cfg = run_config(tmp_path, data, max_duration="2ba", save_interval="2ba")
    path = sweep_file(tmp_path, {"list": [{"name": "only"}]}, base=cfg)
    sw = S.load_sweep(path)
    assert S.run_all(sw) == []
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**cfg, "model": {**cfg["model"], "norm": "rmsnorm"}}))
    sw = S.load_sweep(path)
    assert S.status(sw, sw.runs[0]) == "done" and "model.norm ('layernorm' -> 'rmsnorm')" in S.stale(sw, sw.runs[0])
    assert S.run_all(sw) == []
    out = capsys.readouterr().out
    assert "only: its settings changed since it ran (model.norm ('layernorm' -> 'rmsnorm')); rerunning" in out
    assert yaml.safe_load(open(os.path.join(S.run_dir(sw, sw.runs[0]), "config.yaml")))["model"]["norm"] == "rmsnorm"
    aside = [p for p in os.listdir(sw.out) if p.startswith("only.stale-")]
    assert len(aside) == 1 and yaml.safe_load(open(os.path.join(sw.out, aside[0], "config.yaml")))["model"]["norm"] == "layernorm"


def test_a_variant_name_must_be_a_plain_folder_name(tmp_path):
    path = sweep_file(tmp_path, {"list": [{"name": "../x", "seed": 1}]})
    with pytest.raises(S.SweepError, match=r"list: name '../x' must be a plain folder name"):
        S.load_sweep(path)
