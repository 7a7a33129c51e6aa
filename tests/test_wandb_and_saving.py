"""Where a run reports and saves: wandb goes online when logged in (or told), else offline with one
line saying so, in the group a sweep or phase chain gives it; `save_folder=""` on the command line
turns saving off as documented."""

import os

import pytest

from flexbert.train.loggers import wandb_mode

NOTE = ("[flexbert] wandb: offline (no wandb login found: `wandb login`, WANDB_API_KEY or WANDB_MODE=online sends "
        "runs to wandb); `wandb sync` uploads this one later")


def test_wandb_is_online_when_logged_in_or_told_and_otherwise_says_it_is_offline(tmp_path):
    netrc = tmp_path / "netrc"
    assert wandb_mode({"NETRC": str(netrc)}) == ("offline", NOTE)  # no login anywhere
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    os.chmod(netrc, 0o600)
    assert wandb_mode({"NETRC": str(netrc)}) == (None, None)  # `wandb login` wrote it: wandb's own default
    assert wandb_mode({"NETRC": str(tmp_path / "none"), "WANDB_API_KEY": "k"}) == (None, None)
    assert wandb_mode({"NETRC": str(tmp_path / "none"), "WANDB_MODE": "offline"}) == (None, None)  # set: it wins as is


def test_the_run_passes_the_mode_and_group_to_wandb_and_says_so(tmp_path, monkeypatch, capsys):
    from flexbert.config import from_dict
    from flexbert.train.builders import build_loggers
    from flexbert.train.config import RunConfig
    from test_train_fixtures import run_config

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = from_dict(RunConfig, run_config(tmp_path, "x", loggers={"wandb": True, "wandb_group": "sweep-a"}), "")
    (wandb,) = [lg for lg in build_loggers(cfg, str(tmp_path)) if type(lg).__name__ == "WandBLogger"]
    assert wandb._init_kwargs["mode"] == "offline" and wandb._init_kwargs["group"] == "sweep-a"
    assert capsys.readouterr().out.strip() == NOTE
    monkeypatch.setenv("WANDB_MODE", "online")
    (wandb,) = [lg for lg in build_loggers(cfg, str(tmp_path)) if type(lg).__name__ == "WandBLogger"]
    assert "mode" not in wandb._init_kwargs and capsys.readouterr().out == ""


@pytest.mark.parametrize("override, folder", [("save_folder=", None), ("save_folder=null", "run/checkpoints"),
                                              ("save_folder=''", None)])
def test_an_empty_save_folder_on_the_command_line_turns_saving_off(override, folder):
    """`save_folder=""` reaches the program as `save_folder=` (the shell drops the quotes)."""
    from flexbert.train.config import load_run_config

    cfg = load_run_config(None, ["data.local=x", "run_dir=run", override])
    assert cfg.resolved_save_folder == folder
