"""FLOPs per token for MFU match the paper's anchors (facts §3)."""

import pytest

from flexbert.model.config import FlexBertConfig
from flexbert.model.flops import flops_per_token, peak_flops_for


def test_base_flops_match_paper():
    base = FlexBertConfig()
    # 0.986 GFLOP/token at seq 1024 (6 x 149M params + attention), 1.51 at 8192, dense head
    assert flops_per_token(base, 1024, predicted_fraction=1.0) == pytest.approx(0.986e9, rel=0.01)
    assert flops_per_token(base, 8192, predicted_fraction=1.0) == pytest.approx(1.51e9, rel=0.01)
    # sparse prediction: the 50k-vocab head only on the 30% masked tokens
    assert flops_per_token(base, 1024) < 0.85e9
    # windows: local layers cost the same at 8192 as at 1024, global ones grow
    all_global = FlexBertConfig(local_attention=-1)
    assert flops_per_token(all_global, 8192, 1.0) - flops_per_token(all_global, 1024, 1.0) > \
        flops_per_token(base, 8192, 1.0) - flops_per_token(base, 1024, 1.0)


def test_peak_table():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops_for("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops_for("Some CPU") is None
