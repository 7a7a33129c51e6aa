"""Bad invocations of train.py exit non-zero with exactly one clear line (no traceback wall)."""

import os


from test_train_fixtures import ROOT, train_py

TINY = os.path.join(ROOT, "configs", "tiny.yaml")


def one_line_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_unknown_key_with_suggestion(data):
    line = one_line_error(train_py([TINY, f"data.local={data}", "optimizer.lrr=1e-3"]))
    assert "unknown config key 'optimizer.lrr'" in line and "did you mean 'lr'" in line


def test_wrong_type(data):
    line = one_line_error(train_py([TINY, f"data.local={data}", "optimizer.lr=fast"]))
    assert "optimizer.lr" in line and "expected float" in line


def test_unknown_module_lists_choices(data):
    line = one_line_error(train_py([TINY, f"data.local={data}", "model.norm=rmsnrom"]))
    assert "model.norm" in line and "did you mean 'rmsnorm'" in line and "layernorm" in line


def test_missing_data_folder(tmp_path):
    proc = train_py([TINY, f"data.local={tmp_path / 'nope'}", f"run_dir={tmp_path / 'run'}"])
    line = one_line_error(proc)
    assert "data.local" in line and "does not exist" in line and proc.returncode == 2


def test_unreadable_checkpoint(tmp_path, data):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint")
    proc = train_py([TINY, f"data.local={data}", f"load_path={bad}", f"run_dir={tmp_path / 'run'}", "autoresume=false"])
    line = one_line_error(proc)
    assert f"cannot read checkpoint {bad}" in line


def test_usage_and_debug_flag(tmp_path):
    line = one_line_error(train_py([]))
    assert "no config file" in line
    line = one_line_error(train_py([str(tmp_path / "missing.yaml")]))
    assert "config file not found" in line
    dbg = train_py([TINY, "optimizer.lrr=1", "--debug"])
    assert dbg.returncode == 2 and "Traceback" in dbg.stderr  # --debug shows where it came from


def test_a_flexbert_process_starts_no_compile_worker_pool_unless_it_compiles():
    """Importing Composer loads torch._inductor.async_compile, which (with triton installed) starts
    Inductor's compile-worker pool at once: a second process importing torch and Inductor, ~12 s of
    CPU, in every process and rank.  FlexBERT's entry points set TORCH_WARM_POOL=0 first (where
    unset), so the trainer's imports leave the pool unstarted."""
    import subprocess
    import sys

    code = (f"from flexbert.cli.train import main; assert main([{TINY!r}, 'optimizer.lrr=1']) == 2; "  # a refused key
            "import flexbert.train.builders; from torch._inductor import async_compile as ac; "
            "print('pools', len(ac._pool_set))")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_WARM_POOL"}  # as a user's shell has it
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "pools 0"
