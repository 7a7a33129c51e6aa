"""make gpu-report's orchestrator (scripts/gpu_harness.py): the plan, metrics.jsonl into
the table, the Markdown, the no-CUDA line, and a tiny end-to-end run on CPU."""

from __future__ import annotations

import json
import os
import shlex
import sys

import pytest

from data_fixtures.helpers import small_tokenizer_dir
from test_train_fixtures import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import gpu_harness as G  # noqa: E402
import gpu_report as cli  # noqa: E402


def _opts(tmp_path, **kw):
    return G.Options(work=str(tmp_path / "w"), repo=ROOT, python="python3", **kw)


def test_full_plan_covers_the_issue_table(tmp_path):
    (tmp_path / "wh").mkdir()
    steps = G.plan(_opts(tmp_path, wheelhouse=str(tmp_path / "wh"), tiktoken="/x/gpt2.tiktoken"))
    names = [s.name for s in steps]
    assert names[:10] == ["install wheels", "tokenizer (50,368 ids)", "synthetic shards at 1024", "GPU tests",
                          "train base-none-mb48", "train base-model-mb48", "synthetic shards at 8192",
                          "train base-context-extension-blocks-mb9", "bench_inference vs transformers",
                          "bench_model vs transformers"]
    assert "--tiktoken /x/gpt2.tiktoken" in steps[1].cmd
    runs = [(s.meta["config"], s.meta["compile"], s.meta["microbatch"]) for s in steps if s.kind == "train"]
    assert {c for _, c, _ in runs} == {"none", "blocks", "model"}
    assert ("configs/base-context-extension.yaml", "blocks", 9) in runs and ("configs/large.yaml", "blocks", 28) in runs
    assert runs[0] == ("configs/base.yaml", "none", 48)  # the shipped config first
    ext = next(s for s in steps if "context-extension" in s.name)
    args = shlex.split(ext.cmd)
    assert args[:3] == ["python3", os.path.join(ROOT, "train.py"), os.path.join(ROOT, "configs/base-context-extension.yaml")]
    assert {"data.microbatch_size=9", "data.global_batch_size=18", "data.max_seq_len=8192", "load_path=null",
            "reset_time=false", "save_folder=''", "max_duration=20ba", "data.eval_split=null", "device=gpu"} <= set(args)
    assert "pytest -q -m gpu" in steps[3].cmd and all(s.timeout_s <= 300 for s in steps)


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path, capsys):
    assert cli.main(["--dry-run", "--work", str(tmp_path / "w"), "--wheelhouse", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n# ") + 1 == len(G.plan(_opts(tmp_path))) and "train.py" in out and "bench_model.py" in out
    assert not (tmp_path / "w").exists()


def test_summarize_takes_steady_state_median_and_max_memory(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "batch": b, "throughput/tokens_per_sec": tps, "throughput/mfu": tps / 1e6,
             "memory/max_allocated_gb": mem} for b, tps, mem in
            [(1, 1000.0, 20.0), (2, 5000.0, 26.0), (3, 9000.0, 26.0), (4, 260000.0, 26.1), (5, 263000.0, 26.1),
             (6, 270000.0, 26.0)]]
    recs.insert(3, {"kind": "eval", "batch": 3, "metrics/eval/MLMLoss": 3.0})
    recs.append({"kind": "final", "batch": 6})
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    s = G.summarize(str(path))
    assert s == {"steps": 6, "tokens_per_s": 263000.0, "mfu": 0.263, "peak_gib": 26.1}


def test_classify_failures():
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 5.53 GiB. GPU 0 has a total capacity of 79.19 GiB"
    assert G.classify(1, "trace\n" + oom) == "OOM (5.53 GiB request)"
    assert G.classify(124, "") == "timeout" and G.classify(0, "whatever") == "ok"
    assert G.classify(2, "a\nerror: data.local: folder x does not exist\n") == "failed (rc 2: error: data.local: folder x does not exist)"


def test_render_and_write_keep_the_rest_of_the_page(tmp_path):
    train = G.Step("train base-blocks-mb32", "x", 1, "train",
                   {"config": "configs/base.yaml", "compile": "blocks", "microbatch": 32, "row_tokens": 32768, "run_dir": ""},
                   status="ok", result={"tokens_per_s": 263000.0, "mfu": 0.22, "peak_gib": 26.04, "seconds": 61})
    oom = G.Step("train base-none-mb96", "x", 1, "train",
                 {"config": "configs/base.yaml", "compile": "none", "microbatch": 96, "row_tokens": 98304, "run_dir": ""},
                 status="OOM (5.53 GiB request)")
    tests = G.Step("GPU tests", "x", 1, "tests", status="ok", output_tail="8 passed, 3 skipped")
    env = {"device": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0", "date": "2026-11-23"}
    md = G.render([train, oom, tests], env, "make gpu-report")
    assert "| configs/base.yaml | blocks | 32 (32,768) | 263K | 22.0% | 26.0 GiB | ok |" in md
    assert "| configs/base.yaml | none | 96 (98,304) |  |  |  | OOM (5.53 GiB request) |" in md
    assert "Device: NVIDIA H100 80GB HBM3, driver 580.159.04, CUDA 13.0; torch 2.11.0" in md and "8 passed, 3 skipped" in md
    page = tmp_path / "b.md"
    page.write_text("# GPU\n\nbefore\n\n" + G.BEGIN + "\nold\n" + G.END + "\n\nafter (earlier figures)\n")
    G.write_report(str(page), md)
    text = page.read_text()
    assert text.startswith("# GPU\n\nbefore\n\n" + G.BEGIN + "\n## Measured by `make gpu-report`")
    assert "old" not in text and text.endswith(G.END + "\nafter (earlier figures)\n")
    G.write_report(str(page), md)
    assert page.read_text() == text  # idempotent


def test_without_cuda_one_line_and_nothing_done(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_smoke_run_on_cpu_end_to_end(tmp_path_factory, tmp_path, capsys):
    tok = small_tokenizer_dir(tmp_path_factory)
    out = tmp_path / "r.md"
    assert cli.main(["--device", "cpu", "--smoke", "--tokenizer", tok, "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    assert "3 of 3 steps ok" in capsys.readouterr().out
    text = out.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| configs/tiny.yaml"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["configs/tiny.yaml", "none", "4 (512)"] and cells[-1] == "ok" and float(cells[3].rstrip("K")) > 0
    metrics = G.summarize(str(tmp_path / "w" / "runs" / "tiny-none-mb4" / "metrics.jsonl"))
    assert metrics["steps"] == 3
    assert not (tmp_path / "w" / "runs" / "tiny-none-mb4" / "checkpoints").exists()  # benchmark runs save nothing


def test_gpu_page_says_for_every_run_whether_it_was_measured():
    text = open(os.path.join(ROOT, "docs", "benchmarks-gpu.md")).read()
    assert "measured on NVIDIA H100 80GB HBM3, 2026-11-23, earlier session".lower() in text.lower()
    section = text[text.index(G.BEGIN):text.index(G.END)]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in section.splitlines() if ln.startswith("| configs/")]
    assert rows
    for cells in rows:
        figures, status = cells[3:6], cells[6]
        assert status, cells
        if any(figures):
            assert status == "ok", cells  # a figure only from a run that finished
        else:
            assert status != "ok" and ("not measured yet" in status or status.startswith(("OOM", "failed", "timeout", "skipped", "not run")))


def test_a_budget_too_small_for_every_step_reports_what_ran_and_marks_the_rest(tmp_path_factory, tmp_path, capsys):
    """The lease ends before the plan does: each finished step is in the report at once, the
    steps the budget cannot reach are marked not run (the smoke plan on CPU, a 25 s budget)."""
    tok = small_tokenizer_dir(tmp_path_factory)
    out = tmp_path / "r.md"
    seen = []
    steps = G.plan(G.Options(work=str(tmp_path / "w"), device="cpu", smoke=True, steps=3, tokenizer=tok, repo=ROOT))
    G.run_steps(steps, 25, str(tmp_path / "logs"), echo=lambda *_: None,
                after_step=lambda done: (G.write_report(str(out), G.render(done, {}, "test")), seen.append(out.read_text())))
    assert steps[0].status == "ok" and G.NOT_RUN in {s.status for s in steps[1:]}
    assert seen and "| synthetic shards at 128 | ok |" in seen[0]  # written the moment the first step finished
    text = out.read_text()
    for s in steps:
        assert f"| {s.name} | {s.status} |" in text
