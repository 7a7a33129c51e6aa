"""Phase changes: ``load_path`` + ``reset_time`` with a new LR / weight decay / max_lr, and RoPE
theta changes for context extension, through the run-config path."""

import os

import pytest
import torch

from test_train_fixtures import ROOT, build_and_fit, read_jsonl, run_config


@pytest.fixture(scope="module")
def phase1(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("phase1")
    cfg = run_config(tmp, data, max_duration="4ba", save_interval="2ba",
                     optimizer={"lr": 2e-3, "weight_decay": 1e-5})
    build_and_fit(cfg)
    return os.path.join(cfg["run_dir"], "checkpoints", "ba4.pt")


def _build(cfg_dict):
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    clean_stale_shared_memory()
    return build_trainer(from_dict(RunConfig, cfg_dict, ""))


def test_phase_change_overrides_optimizer_and_resets_time(tmp_path, data, phase1):
    saved = torch.load(phase1, map_location="cpu", weights_only=False)["state"]
    saved_groups = saved["optimizers"]["StableAdamW"]["param_groups"]
    assert saved_groups[0]["lr"] == pytest.approx(2e-3) and saved_groups[0]["weight_decay"] == 1e-5

    cfg = run_config(tmp_path, data, run_dir=str(tmp_path / "phase2"), max_duration="3ba", load_path=phase1,
                     reset_time=True, optimizer={"lr": 5e-4, "weight_decay": 1e-6, "max_lr": 6e-4},
                     scheduler={"name": "constant_with_warmup", "t_warmup": "0ba"},
                     model={**run_config(tmp_path, data)["model"], "global_rope_theta": 160000.0})
    run = _build(cfg)
    try:
        opt = run.trainer.state.optimizers[0]
        assert run.plan.kind == "phase"
        assert int(run.trainer.state.timestamp.batch) == 0  # the clock restarted
        g0, g1 = opt.param_groups
        assert g0["lr"] == pytest.approx(5e-4) and g0["initial_lr"] == pytest.approx(5e-4)
        assert g0["weight_decay"] == 1e-6 and g1["weight_decay"] == 0.0
        assert g0["max_lr"] == 6e-4 and g1["max_lr"] == 6e-4
        assert run.trainer.state.schedulers[0].base_lrs == [5e-4, 5e-4]
        # the optimizer moments come from the checkpoint (kept across the phase change)
        saved_state = saved["optimizers"]["StableAdamW"]["state"]
        name_to_param = dict(run.model.named_parameters())
        p = name_to_param["model.model.layers.0.attn.Wqkv.weight"]
        saved_moment = saved_state["model.model.layers.0.attn.Wqkv.weight"]["exp_avg"]
        assert saved_moment.abs().sum() > 0
        torch.testing.assert_close(opt.state[p]["exp_avg"], saved_moment)
        # the weights are phase 1's
        torch.testing.assert_close(p.detach(), saved["model"]["model.model.layers.0.attn.Wqkv.weight"])
        run.fit()
    finally:
        run.close()
    assert run.callbacks["resume"].resumed_from_batch is None  # a new phase reads its data from the start
    recs = [r for r in read_jsonl(tmp_path / "phase2" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["batch"] for r in recs] == [1, 2, 3]
    assert all(r["lr"] == pytest.approx(5e-4) for r in recs)
    assert os.path.exists(tmp_path / "phase2" / "checkpoints" / "ba3.pt")


def test_theta_change_changes_outputs(tmp_path, data, phase1):
    """Same weights (loaded from phase 1), two configs that differ only in global_rope_theta."""
    outs = {}
    for theta in (10000.0, 160000.0, 10000.0):
        model = run_config(tmp_path, data)["model"]
        cfg = run_config(tmp_path, data, run_dir=str(tmp_path / f"t{theta}"), load_path=phase1,
                         load_weights_only=True, save_folder="", model={**model, "global_rope_theta": theta})
        run = _build(cfg)
        try:
            row = next(iter(run.eval_loader))["rows"][0]
            run.model.eval()
            with torch.no_grad():
                logits = run.model.model(row["input_ids"], cu_seqlens=row["cu_seqlens"], max_seqlen=int(row["max_seqlen"])).logits
        finally:
            run.close()
        if theta in outs:
            torch.testing.assert_close(logits, outs[theta], rtol=0, atol=0)  # deterministic control
        outs[theta] = logits
    diff = (outs[10000.0] - outs[160000.0]).abs().max().item()
    assert diff > 1e-6, diff  # (the control above is bit-identical: the difference is the theta)


def test_context_extension_configs_change_theta_and_outputs():
    """configs/base.yaml -> base-context-extension.yaml: the paper's 10k -> 160k global theta
    reaches the model, and the same weights give different outputs."""
    from flexbert.train.recipe import build_model
    from flexbert.train.config import load_run_config

    base = load_run_config(os.path.join(ROOT, "configs", "base.yaml"))
    ext = load_run_config(os.path.join(ROOT, "configs", "base-context-extension.yaml"))
    assert base.model.global_rope_theta == 10000.0 and ext.model.global_rope_theta == 160000.0
    assert ext.model.local_rope_theta == 10000.0 and ext.reset_time and ext.load_path
    small = dict(num_hidden_layers=3)  # the base width, fewer layers: keeps the test fast on CPU
    torch.manual_seed(0)
    import dataclasses

    m_base = build_model(dataclasses.replace(base, model=dataclasses.replace(base.model, **small)))
    m_ext = build_model(dataclasses.replace(ext, model=dataclasses.replace(ext.model, **small)))
    m_ext.load_state_dict(m_base.state_dict())
    m_base.eval(), m_ext.eval()
    ids = torch.randint(5, 50000, (300,))
    row = {"input_ids": ids, "labels": ids.clone(), "cu_seqlens": torch.tensor([0, 300], dtype=torch.int32),
           "max_seqlen": 300}
    with torch.no_grad():
        a, b = (m.model(ids, cu_seqlens=row["cu_seqlens"], max_seqlen=300).logits for m in (m_base, m_ext))
    assert (a - b).abs().max().item() > 1e-3
