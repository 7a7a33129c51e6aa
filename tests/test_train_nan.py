"""The NaN guard stops a diverging run (absurd LR) with a clear message and keeps the last good
checkpoint; no checkpoint of the diverged weights is written."""

import os

import torch

from test_train_fixtures import data_dir, run_config, train_py


def test_absurd_lr_is_stopped(tmp_path_factory):
    import yaml

    data = data_dir(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("nan")
    cfg = run_config(tmp, data, max_duration="20ba", save_interval="1ba", save_num_to_keep=-1,
                     optimizer={"lr": 1e6}, scheduler={"name": "constant_with_warmup", "t_warmup": "1ba"})
    path = tmp / "nan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = train_py([str(path)])
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged at batch "), proc.stderr
    assert "loss is nan" in lines[0] or "loss is inf" in lines[0]
    ckpts = os.path.join(cfg["run_dir"], "checkpoints")
    saved = sorted(int(n[2:-3]) for n in os.listdir(ckpts) if n.startswith("ba") and n.endswith(".pt"))
    bad_batch = int(lines[0].split("at batch ")[1].split()[0])
    assert saved and saved[-1] == bad_batch - 1  # every good step saved, the diverged one not
    assert f"Last good checkpoint: {os.path.join(ckpts, f'ba{saved[-1]}.pt')}" in lines[0]
    weights = torch.load(os.path.join(ckpts, f"ba{saved[-1]}.pt"), map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in weights["state"]["model"].values())


def test_the_console_prints_a_nan_loss_instead_of_crashing():
    """With callbacks.nan_guard=false a diverged run keeps logging: the console shows nan/inf."""
    import io

    import torch

    from flexbert.train import metric_keys as K
    from flexbert.train.loggers import ConsoleLogger, console_fields

    log = ConsoleLogger(stream=io.StringIO())
    log.log_metrics({K.TRAIN_LOSS: torch.tensor(float("nan")), K.TOKENS_PER_SEC: float("inf"), K.LR: 1e-3,
                     K.EVAL_LOSS: float("nan")})
    line = console_fields(log.latest)
    assert " loss nan" in line and " inf tok/s" in line and " lr 0.001" in line
    assert log._eval[K.EVAL_LOSS] != log._eval[K.EVAL_LOSS]  # still a float nan, printable with :.4f
