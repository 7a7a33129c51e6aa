"""``compile: model`` is one graph from the embeddings to the loss: the training forward compiles
with ``fullgraph=True`` on CPU (any graph break is an error) and gives eager mode's loss, counts
and gradients; the guards show that an unbound backend does break the graph and that the
comparison catches a different model."""

from __future__ import annotations

import pytest
import torch

from flexbert.model.compile import compile_model
from test_model_compile import composer_model, loader_row


def _step(model, rows) -> list[tuple]:
    """(loss, correct, count, grads) of each row: the training forward and backward."""
    out = []
    for row in rows:
        model.model.zero_grad()
        o = model(row)
        o.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.model.named_parameters() if p.grad is not None}
        out.append((o.loss.detach().clone(), int(o.stats.correct), int(o.stats.count), grads))  # CUDA graphs reuse outputs
    return out


def _assert_same(a, b) -> None:
    for (la, ca, na, ga), (lb, cb, nb, gb) in zip(a, b):
        torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
        assert (ca, na) == (cb, nb)
        assert ga.keys() == gb.keys()
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("loss,sparse", [("chunked", True), ("plain", False)])
def test_training_forward_is_one_graph_and_equals_eager(loss, sparse):
    torch._dynamo.reset()
    rows = [loader_row(s) for s in (21, 22)]
    eager = composer_model(seed=3, mlm_loss=loss, sparse_prediction=sparse).train()
    compiled = composer_model(seed=3, mlm_loss=loss, sparse_prediction=sparse).train()
    compiled.model.model.bind_backends("cpu", torch.float32)
    compiled.model.compile(fullgraph=True, dynamic=False, backend="aot_eager")  # a break raises here
    _assert_same(_step(compiled, rows), _step(eager, rows))


def test_compile_model_binds_the_backend_and_passes_the_mode():
    torch._dynamo.reset()
    model = composer_model(seed=4).train()
    compile_model(model.model, "model", backend="aot_eager", device="cpu", dtype=torch.float32)
    assert [k[0] for k in model.model.model._backends] == ["cpu"]
    explained = torch._dynamo.explain(model.model.forward)(**_inputs(model, loader_row(23)))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    with pytest.raises(ValueError, match="compile_mode: unknown value 'fast'; valid choices: default, reduce-overhead"):
        compile_model(composer_model().model, "model", compile_mode="fast")


def _inputs(model, row) -> dict:
    return dict(model.shapes.row_inputs(row), input_ids=row["input_ids"], labels=row["labels"], return_logits=False)


def test_guards_an_unbound_backend_breaks_the_graph_and_another_model_differs():
    torch._dynamo.reset()
    unbound = composer_model(seed=5).train()
    unbound.model.compile(fullgraph=True, dynamic=False, backend="aot_eager")
    with pytest.raises(Exception, match="(?i)disable|graph break|skip"):
        unbound(loader_row(24))
    rows = [loader_row(25)]
    with pytest.raises(AssertionError):
        _assert_same(_step(composer_model(seed=6).train(), rows), _step(composer_model(seed=7).train(), rows))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "varlen"])
def test_on_cuda_each_backend_is_one_graph_and_its_cuda_graph_replays_agree(backend):
    """What the CPU tests cannot show: with a CUDA attention backend bound, the bf16 training
    forward is still one graph, and ``reduce-overhead`` (CUDA graphs) replays give eager's loss and
    gradients step after step (outputs are read before the next replay, as Composer does)."""
    from flexbert.model.backends import ATTENTION_BACKENDS

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    why = ATTENTION_BACKENDS.get(backend).why_unavailable(torch.device("cuda"), torch.bfloat16)
    if why:
        pytest.skip(why)
    torch._dynamo.reset()
    size = dict(attention_backend=backend, hidden_size=128, intermediate_size=192, num_attention_heads=2)
    rows = [{k: v.cuda() if torch.is_tensor(v) else v for k, v in loader_row(s).items()} for s in (31, 32, 33)]
    eager = composer_model(seed=8, **size).cuda().train()
    graphs = composer_model(seed=8, **size).cuda().train()
    compile_model(graphs.model, "none", device="cuda", dtype=torch.bfloat16)  # binds the backend only
    with torch.autocast("cuda", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(graphs.model.forward)(**_inputs(graphs, rows[0]))
        assert explained.graph_break_count == 0, explained.break_reasons
        graphs.model.compile(fullgraph=True, dynamic=False, mode="reduce-overhead")
        got, ref = _step(graphs, rows), _step(eager, rows)
        other = _step(composer_model(seed=9, **size).cuda().train(), rows[:1])
    for (lg, cg, ng, gg), (lr, cr, nr, gr) in zip(got, ref):
        torch.testing.assert_close(lg, lr, atol=2e-2, rtol=1e-2)
        assert ng == nr and abs(cg - cr) <= max(2, nr // 50)  # bf16 may flip a near-tie
        for name in gr:
            err = (gg[name].float() - gr[name].float()).norm() / gr[name].float().norm().clamp(min=1e-12)
            assert err < 0.05, (name, float(err))
    assert abs(float(other[0][0]) - float(ref[0][0])) > 0.05  # the bounds above do tell models apart
