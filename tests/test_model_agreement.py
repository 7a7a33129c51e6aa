"""The agreement checks of tests/model_guards.py can fail: each planted defect (window one token
narrower, merged document boundary, doubled global RoPE theta, skipped layer) moves the logits and
is caught; Inductor's generated code (CPU, both compile modes) agrees with eager mode under that
bound.  The GPU backends and compiled CUDA graphs use the same check (test_model_backends_gpu.py)."""

import pytest
import torch

from model_guards import DEFECTS, assert_agrees, build, defect_logits, logits, make_batch


@pytest.fixture(scope="module")
def cpu_case():
    ids, cu, max_len = make_batch(1024, "cpu", seed=3)
    ref = logits(build("cpu"), ids, cu, max_len, torch.float32)
    return ids, cu, max_len, ref, defect_logits("cpu", torch.float32, ids, cu, max_len)


def test_every_planted_defect_is_caught(cpu_case):
    ids, cu, max_len, ref, defects = cpu_case
    assert set(defects) == set(DEFECTS)
    assert_agrees(logits(build("cpu"), ids, cu, max_len, torch.float32), ref, defects)  # the same model agrees
    for name, wrong in defects.items():
        with pytest.raises(AssertionError):
            assert_agrees(wrong, ref, defects)
        assert float((wrong - ref).abs().max()) > 1e-2, name  # init_std large enough that it shows


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["blocks", "model"])
def test_inductor_matches_eager_on_cpu(cpu_case, mode):
    from flexbert.model.compile import compile_model
    from flexbert.model.static import pad_cu_seqlens

    ids, cu, max_len, ref, defects = cpu_case
    torch._dynamo.reset()
    model = build("cpu")
    compile_model(model, mode, backend="inductor", device="cpu", dtype=torch.float32)
    with torch.no_grad():
        got = model(ids, cu_seqlens=pad_cu_seqlens(cu, 64), max_seqlen=512, static=True).logits.float()
    assert_agrees(got, ref, defects)
