"""Activation checkpointing (run config ``activation_checkpointing: none | all | every_N``): the
chosen blocks really are recomputed in backward, and loss and gradients equal the run without it,
dropout included, eager and compiled; the memory estimate shrinks accordingly."""

import pytest
import torch

from flexbert.model.compile import compile_model
from test_model_compile import composer_model, loader_row


def _grads(model, row, seed=5):
    model.model.zero_grad()
    torch.manual_seed(seed)  # the dropout masks: the same draws in both runs
    out = model(row)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.model.named_parameters() if p.grad is not None}


def _calls(model) -> list[int]:
    """Calls of each block's forward (module hooks do not fire when checkpointing recomputes)."""
    counts = [0] * len(model.model.model.layers)
    for i, layer in enumerate(model.model.model.layers):
        def counted(*args, _forward=layer.forward, _i=i, **kw):
            counts[_i] += 1
            return _forward(*args, **kw)

        layer.forward = counted
    return counts


@pytest.mark.parametrize("spec,recomputed", [("all", [0, 1, 2, 3]), ("every_2", [0, 2])])
def test_checkpointed_blocks_are_recomputed_and_gradients_are_equal(spec, recomputed):
    row = loader_row(31)
    ref_loss, ref = _grads(composer_model(seed=2, attn_out_dropout=0.1).train(), row)
    model = composer_model(seed=2, attn_out_dropout=0.1).train()
    model.model.model.checkpoint_layers(spec)
    calls = _calls(model)
    loss, got = _grads(model, row)
    assert [i for i, c in enumerate(calls) if c == 2] == recomputed and all(c in (1, 2) for c in calls)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        model.eval()
        calls[:] = [0] * len(calls)
        model(row)
        assert calls == [1] * len(calls)  # evaluation recomputes nothing


def test_compiled_with_checkpointing_equals_eager_without():
    torch._dynamo.reset()
    row = loader_row(32)
    ref_loss, ref = _grads(composer_model(seed=3).train(), row)
    model = composer_model(seed=3).train()
    model.model.model.checkpoint_layers("all")
    compile_model(model.model, "model", backend="aot_eager", device="cpu", dtype=torch.float32)
    loss, got = _grads(model, row)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_config_and_memory_estimate():
    import os

    from flexbert.config import ConfigError
    from flexbert.train.config import load_run_config
    from flexbert.train.memory import estimate_run
    from test_train_fixtures import ROOT

    path = os.path.join(ROOT, "configs", "base-context-extension.yaml")
    with pytest.raises(ConfigError, match="activation_checkpointing: unknown value 'some'; valid choices: none, all, every_N"):
        load_run_config(path, ["activation_checkpointing=some"])
    plain = estimate_run(load_run_config(path), 9)
    every = estimate_run(load_run_config(path, ["activation_checkpointing=every_2"]), 9)
    full = estimate_run(load_run_config(path, ["activation_checkpointing=all"]), 9)
    assert full.activations < every.activations < plain.activations
    assert full.activations < 0.2 * plain.activations and full.weights_and_optimizer == plain.weights_and_optimizer


def test_profiler_writes_a_trace_of_the_chosen_batches(tmp_path, data, capfd):
    """... and is quiet on a machine without a GPU: no `gpuGetDeviceCount failed` line from the
    profiler library (written to file descriptor 2 by C++, hence capfd; printed once a process, at
    the profiler's first start)."""
    import json
    import os

    from test_train_fixtures import build_and_fit, run_config

    cfg = run_config(tmp_path, data, max_duration="4ba", profiler={"start_batch": 2, "batches": 2})
    run = build_and_fit(cfg)
    trace = os.path.join(cfg["run_dir"], "profile", "trace_rank0.json")
    events = json.load(open(trace))["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)  # the model's operators
    out, err = capfd.readouterr()
    assert "[profiler] batches 2-3: trace" in out and "Self CPU" in out
    assert "gpuGetDeviceCount" not in out + err
    assert run is not None
