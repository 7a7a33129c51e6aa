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
    assert names[:12] == ["install wheels", "tokenizer (50,368 ids)", "synthetic shards at 1024", "GPU tests",
                          "train base-none-mb48", "train base-model-mb48", "train base-model-reduce-overhead-mb48",
                          "bench_inference vs transformers", "bench_model vs transformers",
                          "bench_pretraining vs transformers' Trainer", "synthetic shards at 8192",
                          "train base-context-extension-blocks-mb9"]
    bench = shlex.split(steps[9].cmd.split("}; ", 1)[1].split(" $(")[0])  # the command, before the flash-attn probe
    assert bench[1].endswith("scripts/bench_pretraining.py") and {"--device", "cuda", "--tokens", "4M"} <= set(bench)
    assert steps[9].cmd.endswith("-- data.microbatch_size=32") and "runs/demo/shards" in steps[9].cmd
    assert "--tiktoken /x/gpt2.tiktoken" in steps[1].cmd
    runs = [(s.meta["config"], s.meta["compile"], s.meta["microbatch"]) for s in steps if s.kind == "train"]
    assert {c for _, c, _ in runs} == {"none", "blocks", "model", "model (reduce-overhead)"}
    cuda_graphs = shlex.split(steps[6].cmd)
    assert {"compile=model", "compile_mode=reduce-overhead"} <= set(cuda_graphs)
    assert "compile_mode=default" in shlex.split(steps[5].cmd)
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
    sets = [[c.strip() for c in ln.strip("|").split("|")] for ln in section.splitlines()
            if ln.startswith("| ") and ln.split("|")[1].strip() in G.INFERENCE_SETS]
    assert [c[0] for c in sets] == list(G.INFERENCE_SETS)  # the inference rows, each measured or saying why not
    for cells in sets:
        assert (cells[-1] == "ok") == any(cells[1:-1]) and cells[-1], cells


def test_a_budget_too_small_for_every_step_reports_what_ran_and_marks_the_rest(tmp_path_factory, tmp_path, monkeypatch):
    """The lease ends before the plan does (the CPU smoke plan through the command line, a 300 s
    budget of which the first step spends 299 s: shards, then a tiny training run and the toy
    inference benchmark that no longer fit): the report is rewritten after every step, the steps
    that fit are in it, the rest are marked not run, and no snapshot's finished step is missing
    later.  The budget's clock is driven by recorded step times (each step really runs), so the
    verdict does not depend on the load of the machine running the test (it once did: a 30 s
    wall-clock budget that a loaded machine's shards step overran)."""
    tok = small_tokenizer_dir(tmp_path_factory)
    out, work = tmp_path / "r.md", tmp_path / "w"
    snapshots = []
    write = G.write_report
    monkeypatch.setattr(G, "write_report", lambda path, md: (write(path, md), snapshots.append(open(path).read())))
    clock, run_one = [0.0], G._run_one

    def recorded_run_one(s, limit, log_path):
        run_one(s, limit, log_path)
        clock[0] += 299.0  # the first step leaves 1 s of the budget; the next needs 15

    monkeypatch.setattr(G, "_run_one", recorded_run_one)
    monkeypatch.setattr(G, "budget_clock", lambda: clock[0])
    assert cli.main(["--device", "cpu", "--smoke", "--tokenizer", tok, "--work", str(work), "--out", str(out),
                     "--budget", "300"]) == 0
    names = [s.name for s in G.plan(G.Options(work=str(work), device="cpu", smoke=True, tokenizer=tok, repo=ROOT))]
    status = dict(_table(out.read_text(), "| step | status |"))
    assert list(status) == names and status[names[0]] == "ok"
    assert [status[n] for n in names[1:]] == [G.NOT_RUN] * (len(names) - 1)  # 1 s left: nothing else fits
    assert "| synthetic shards at 128 | ok |" in snapshots[0] and len(snapshots) >= len(names)
    final = snapshots[-1]
    for snap in snapshots:  # nothing lost: every finished step of an early snapshot is in the final one
        for name, st in _table(snap, "| step | status |"):
            if not st.startswith("not run"):
                assert status[name] == st
    ran = [n for n in names if not status[n].startswith("not run")]
    assert len(os.listdir(work / "logs")) == len(ran)  # each step that ran left its full log
    sets = dict(_table(final, "| set | documents |", cell=-1))
    assert sets == dict.fromkeys(G.INFERENCE_SETS, G.NOT_RUN)


def _table(text: str, header: str, cell: int = 1) -> list[tuple[str, str]]:
    """(first cell, cell ``cell``) of each row of the Markdown table under ``header``."""
    lines = text[text.index(header):].splitlines()[2:]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[: next(
        (i for i, ln in enumerate(lines) if not ln.startswith("|")), len(lines))]]
    return [(r[0], r[cell]) for r in rows]


def test_an_inference_step_cut_short_keeps_its_finished_sets(tmp_path):
    """The benchmark rewrites its JSON after each set; a step killed by its limit still reports
    those sets, the others say why they have no figure, and a stale file never passes for new rows."""
    path = tmp_path / "b.json"
    done = [{"set": s, "docs": 2048, "tokens": 1_000_000 * (i + 1), "flexbert_tokens_per_s": 2.0e6 * (i + 1),
             "transformers_tokens_per_s": 1.0e6, "ratio": 2.0 * (i + 1), "max_abs_diff": 0.01}
            for i, s in enumerate(G.INFERENCE_SETS[:2])]
    path.write_text(json.dumps({"rows": done}))
    step = G.Step("bench_inference vs transformers", "x", 1, "bench", {"json": str(path), "sets": list(G.INFERENCE_SETS)},
                  status="timeout", result={"rows": G.inference_rows(str(path))})
    md = G.render([step], {}, "test")
    assert "| fixed-512 | 2,048 | 1,000,000 | 2.00M | 1.00M | 2.00x | ok |" in md
    assert "| variable-512 | 2,048 | 2,000,000 | 4.00M | 1.00M | 4.00x | ok |" in md
    assert "| fixed-8192 | | | | | | not run (step timeout) |" in md and "| variable-8192 |" in md
    path.write_text('{"rows": [')  # cut mid-write (the benchmark renames, but an older file may be anything)
    assert G.inference_rows(str(path)) == []
    path.write_text(json.dumps({"rows": done}))
    step = G.Step("again", "true", 30, "bench", {"json": str(path), "sets": list(G.INFERENCE_SETS)})
    G._run_one(step, 30, str(tmp_path / "00.log"))
    assert step.status == "ok" and step.result["rows"] == [] and not path.exists()  # the old rows were not this run's
