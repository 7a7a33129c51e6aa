"""scripts/bench_inference.py at toy sizes: the four sets run, each row is written as it finishes,
and the two models are checked to compute the same thing before anything is timed."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import bench_inference as B  # noqa: E402


def test_help_lists_the_four_sets(capsys):
    with pytest.raises(SystemExit):
        B.parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(s in out for s in ("fixed-512", "variable-512", "fixed-8192", "variable-8192"))
    with pytest.raises(SystemExit):
        B.parse_args(["--sets", "fixed-1024"])
    assert "unknown set 'fixed-1024'" in capsys.readouterr().err


def test_toy_run_reports_every_set(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert B.main(["--docs", "4", "--long-docs", "1", "--length-divisor", "32", "--repeats", "1", "--json", str(out)]) == 0
    assert "fixed-512 passes" in capsys.readouterr().err  # progress on stderr, the table on stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["set"] for r in rows] == list(B.SETS)
    for r in rows:
        assert r["flexbert_tokens_per_s"] > 0 and r["transformers_tokens_per_s"] > 0 and r["max_abs_diff"] < 2e-3
    assert rows[0]["tokens"] == 4 * 16 and rows[2]["tokens"] == 8192 // 32  # fixed sets: every document full length


def test_variable_lengths_follow_the_papers_distribution():
    lens = B.lengths("variable-8192", 4000, 1)
    mean = sum(lens) / len(lens)
    assert 3950 < mean < 4250 and min(lens) >= 16 and max(lens) <= 8192


def test_the_comparison_refuses_models_that_differ():
    flex, hf, vocab = B.build_models("small", torch.device("cpu"), 512)
    batch = B.groups(B.lengths("variable-512", 2, 8), 2, vocab, "cpu")[0]
    assert B.max_difference(flex, hf, batch, torch.device("cpu"), torch.float32) < 2e-3
    with torch.no_grad():
        flex.layers[0].mlp.Wo.weight.mul_(10.0)
    assert B.max_difference(flex, hf, batch, torch.device("cpu"), torch.float32) > 2e-3  # measure() refuses to time it


def test_the_gpu_report_names_the_same_sets():
    import gpu_harness

    assert gpu_harness.INFERENCE_SETS == tuple(B.SETS)  # the report's inference table lists exactly these
