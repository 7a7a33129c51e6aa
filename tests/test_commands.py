"""The `flexbert` command package: one command with every subcommand, the shims in scripts/ and
data_prep/ without sys.path edits, no library module locating the checkout, and a run folder or a
saved config read without Composer."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexbert.cli.main import COMMANDS
from test_train_fixtures import ROOT

CLI = Path(ROOT) / "flexbert" / "cli"
NOT_COMMANDS = {"__init__", "main", "common"}


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def test_flexbert_help_lists_every_command_module():
    modules = {p.stem for p in CLI.glob("*.py")} - NOT_COMMANDS
    assert {m for m, _ in COMMANDS.values()} == modules  # one module per command, each in the table
    out = run("-m", "flexbert", "--help")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)


def test_the_console_script_is_installed_and_dispatches():
    """`pip install -e .` (make install) puts a `flexbert` command beside the interpreter."""
    exe = Path(sys.executable).parent / "flexbert"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e . installs it)")
    out = subprocess.run([str(exe), "eval-mlm", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "flexbert eval-mlm" in out.stdout, out.stderr
    bad = subprocess.run([str(exe), "evla-mlm"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown command 'evla-mlm' (did you mean 'eval-mlm'?)")


def test_scripts_are_shims_without_path_edits():
    for folder in ("scripts", "data_prep"):
        for path in (Path(ROOT) / folder).glob("*.py"):
            assert "sys.path.insert" not in path.read_text(), path
    for path in (Path(ROOT) / "flexbert").rglob("*.py"):
        text = path.read_text()
        assert "__file__" not in text and "sys.path" not in text, f"{path}: a library module locates the checkout"


def test_a_refused_input_is_one_line_and_exit_2_in_every_command(tmp_path, capsys):
    """The error root (flexbert/errors.py) through the common runner: a missing model is one line.
    In this process (``flexbert.cli.main.main``, what ``python -m flexbert`` calls): a process per
    command cost ~15 s of imports each; the process path itself is test_flexbert_help_... above and
    the refusals of tests/test_cli.py."""
    from flexbert.cli.main import main

    missing = str(tmp_path / "nope")
    for cmd in (["export", "--run-dir", missing, "--out", str(tmp_path / "o")],
                ["eval-mlm", "--model", missing, "--data", missing],
                ["diagnose", missing]):
        capsys.readouterr()
        code = main(cmd)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (cmd, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_reading_a_run_folder_or_a_saved_config_imports_no_composer(tmp_path, data):
    from flexbert.train.config import load_run_config
    from flexbert.train.run_folder import RunFolder

    folder = RunFolder(str(tmp_path / "run"))
    folder.write_config(load_run_config(os.path.join(ROOT, "configs", "tiny.yaml"), [f"data.local={data}"]))
    code = ("import sys; from flexbert.train.run_folder import RunFolder; "
            f"cfg = RunFolder({folder.path!r}).load_config(); "
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('composer', 'torchmetrics')}))")
    out = run("-c", code, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_parsing_a_config_reads_no_file_of_its_data(tmp_path):
    """Configs are data: a data section naming folders and a store that do not exist parses; the
    tokenizer and shards are looked at only when the data source is resolved."""
    from flexbert.data.source import resolve_source
    from flexbert.train.config import load_run_config

    cfg = load_run_config(os.path.join(ROOT, "configs", "tiny.yaml"),
                          [f"data.local={tmp_path / 'absent'}", "data.remote=s3://no-such-bucket/shards"])
    assert cfg.data.remote == "s3://no-such-bucket/shards" and not (tmp_path / "absent").exists()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        resolve_source(dataclasses.replace(cfg.data, remote=None))


def test_the_readmes_output_folders_are_git_ignored():
    """Every top-level folder a README command writes with --out (hf/, runs/, tok/, shards/) is in
    .gitignore: a 600 MB export is never one `git add .` away from the repository."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    outs = {m.split("/")[0] for m in re.findall(r"--out (\S+)", (root / "README.md").read_text())}
    ignored = {line.strip().strip("/") for line in (root / ".gitignore").read_text().splitlines()}
    assert outs >= {"hf", "runs"} and outs <= ignored, sorted(outs - ignored)
