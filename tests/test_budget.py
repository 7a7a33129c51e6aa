"""The pretraining-budget study (flexbert/experiments/budget.py, scripts/pretraining_budget.py): where the
curves cross, and the whole chain on the test shards (pretrain per budget, fine-tune, random init,
report), resumed for free on a rerun."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))


def test_crossing_is_interpolated_in_log_tokens():
    from flexbert.experiments.budget import crossing

    series = [{"tokens": 10 ** 6, "mean": 0.5}, {"tokens": 2 * 10 ** 6, "mean": 0.6}, {"tokens": 4 * 10 ** 6, "mean": 0.8}]
    assert crossing(series, 0.7) == pytest.approx(2e6 * math.sqrt(2))  # half-way from 0.6 to 0.8, in log tokens
    assert crossing(series, 0.4) == 10 ** 6  # the smallest budget already wins
    assert crossing(series, 0.9) is None


@pytest.mark.slow
def test_budget_series_end_to_end(tmp_path, data, capsys):
    """One budget and one seed (pretraining, two fine-tunes per task: ~2 min on 2 cores): the chain
    and its files; the series logic (order, crossing) is the test above."""
    import yaml

    from flexbert.experiments.plots import is_png
    from flexbert.data.beir import write_beir
    from pretraining_budget import main
    from test_finetune import write_task
    from test_train_fixtures import run_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(run_config(tmp_path, data, max_duration="1ba")))
    task = write_task(str(tmp_path / "task"), 16, 8)
    beir = tmp_path / "beir"
    docs = {f"d{i}": f"document {i} about topic {i % 3}" for i in range(6)}
    write_beir(str(beir), docs, {"q0": "topic 0", "q1": "topic 1"}, {"test": {"q0": {"d0": 1}, "q1": {"d1": 1}}})
    (beir / "train_pairs.jsonl").write_text("".join(json.dumps({"query": f"topic {i}", "positive": docs[f"d{i}"]}) + "\n"
                                                    for i in range(6)))
    out = tmp_path / "budget"
    args = ["--config", str(config), "--shards", data, "--budgets", "1K", "--seeds", "3", "--task-dir", task,
            "--finetune-args", "--text-columns text --epochs 1 --batch-size 8 --max-seq-len 32 --patience 0",
            "--retrieval", str(beir), "--retrieval-args", "--max-steps 2 --batch-size 3 --max-seq-len 32 --no-progress",
            "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "budget.json").read_text())
    assert set(result) == {"classification", "retrieval"}
    from flexbert.eval.evaluation import read_result

    for name, metric in (("classification", "test_accuracy"), ("retrieval", "test_ndcg@10")):
        r = result[name]
        points = r["pretrained"]
        assert len(points) == 1 and points[0]["tokens"] == 1000 and points[0]["tokens_seen"] >= 1000
        assert len(points[0]["values"]) == 1
        assert r["metric"] == metric and 0 <= r["random_init"]["mean"] <= 1
        # the point is its fine-tune's own score, the baseline the random init's
        scores = {n: read_result(str(out / name / n)).metric(metric) for n in os.listdir(out / name)}
        assert len(scores) == 2 and r["random_init"]["values"] == [scores.pop("random-init_seed3")]
        assert list(scores.values()) == points[0]["values"]
    assert read_result(str(out / "retrieval" / "random-init_seed3")).model["random_init"]
    md = (out / "budget.md").read_text()
    assert md.count("| random init |") == 2 and ("reaches the random init" in md or "does not beat" in md)
    assert is_png(str(out / "budget.png"))
    capsys.readouterr()
    assert main(args) == 0  # a rerun redoes nothing
    again = capsys.readouterr().out
    assert again.count("already done, skipped") == 1 and again.count("fine-tune already done") == 4
    assert json.loads((out / "budget.json").read_text()) == result


def test_the_seeds_of_one_budget_are_one_point(tmp_path):
    """Runs stop at the first batch past their budget, so two seeds see slightly different token
    counts: they are still one point of the series (the budget), with the tokens they saw beside."""
    from flexbert.eval.evaluation import Result, write_result
    from flexbert.experiments.budget import Pretrained, Task, collect

    task = Task("classification", "finetune", [], "test_accuracy")
    out, runs = tmp_path / "out", []
    for seed, seen, acc, fresh in ((1, 1_003_049, 0.6, 0.8), (2, 1_003_068, 0.7, 0.4)):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "batch": 9, "tokens": seen}) + "\n")
        runs.append(Pretrained(f"run{seed}", str(run), seed, 1_000_000))
        for name, score in ((f"run{seed}", acc), (f"random-init_seed{seed}", fresh)):
            write_result(str(out / "classification" / name), Result("classification", {}, {}, {"test": {"accuracy": score}}))
    r = collect(runs, [task], str(out), [1, 2])["classification"]
    assert [(p["tokens"], p["tokens_seen"], p["values"]) for p in r["pretrained"]] == [(1_000_000, 1_003_068, [0.6, 0.7])]
    # the random-init baseline is every seed's: mean (0.8 + 0.4) / 2 = 0.6, sd sqrt(0.08) = 0.2828;
    # the pretrained mean 0.65 reaches it at the first budget (seed 1's 0.8 alone would say never)
    assert r["random_init"]["values"] == [0.8, 0.4]
    assert r["random_init"]["mean"] == pytest.approx(0.6) and r["random_init"]["sd"] == pytest.approx(math.sqrt(0.08))
    assert r["crossing_tokens"] == 1_000_000


def test_a_random_init_is_fine_tuned_for_every_seed(tmp_path, capsys):
    """finetune_all asks for one random-init fine-tune per seed (here all found done already, so
    nothing runs: the message per name shows which fine-tunes it wanted)."""
    from flexbert.eval.evaluation import RESULT
    from flexbert.experiments.budget import Pretrained, Task, finetune_all

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    task = Task("classification", "finetune", [], "test_accuracy")
    names = ["run3", "run5", "random-init_seed3", "random-init_seed5"]
    for name in names:
        (tmp_path / "out" / "classification" / name).mkdir(parents=True)
        done = tmp_path / "out" / "classification" / name / RESULT
        done.write_text("{}")
        os.utime(done, (os.path.getmtime(model) + 10,) * 2)  # written after the model: fresh
    runs = [Pretrained(f"run{s}", str(model), s, 1000) for s in (3, 5)]
    assert finetune_all(runs, [task], str(tmp_path / "out"), [3, 5]) == []
    out = capsys.readouterr().out
    assert sorted(n for n in names if f"classification {n}: fine-tune already done" in out) == sorted(names)
    assert out.count("fine-tune already done") == 4


def test_compare_inits_gap_against_the_seed_spread(tmp_path, capsys):
    """compare_inits (make demo's step 8): one model, one fine-tune per seed per init; the gap of the
    means is set against the larger range over seeds (results recorded: nothing runs)."""
    from flexbert.eval.evaluation import Result, write_result
    from flexbert.experiments.budget import Task, compare_inits

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    task = Task("word_order", "finetune", [], "test_accuracy")
    scores = {"pretrained_seed17": 0.90, "pretrained_seed18": 0.92, "random-init_seed17": 0.50, "random-init_seed18": 0.53}
    for name, score in scores.items():
        done = write_result(str(tmp_path / "out" / "word_order" / name), Result("classification", {}, {}, {"test": {"accuracy": score}}))
        os.utime(done, (os.path.getmtime(model) + 10,) * 2)
    r = compare_inits(str(model), task, str(tmp_path / "out"), [17, 18], tag="demo")
    assert r["pretrained"]["values"] == [0.90, 0.92] and r["random_init"]["values"] == [0.50, 0.53]
    assert r["gap"] == pytest.approx(0.91 - 0.515) and r["spread"] == pytest.approx(0.03)  # random init's range
    assert capsys.readouterr().out.count("[demo] word_order") == 4
    # a fine-tune that fails (here a command flexbert does not have: it exits at once) is an error
    # naming it, not a score
    os.remove(tmp_path / "out" / "word_order" / "random-init_seed18" / "result.json")
    with pytest.raises(RuntimeError, match="fine-tunes failed: word_order-random-init_seed18"):
        compare_inits(str(model), Task("word_order", "no-such-command", [], "test_accuracy"), str(tmp_path / "out"),
                      [17, 18], tag="demo")
    assert "[demo] word_order-random-init_seed18: FAILED (exit 2)" in capsys.readouterr().out
