"""Model merging (flexbert/weights/merging.py): TIES equals a computation written out here, merging
copies of one model returns it, and the CLI writes a folder transformers loads."""

import json
import os
import sys

import pytest
import torch

from flexbert.weights.merging import MergeError, merge_states, ties_tensor, trim

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))


def _reference_ties(base, others, weights, density):
    """TIES by the paper's three steps, entry by entry, with plain Python lists."""
    b = base.tolist()
    taus = []
    for w, o in zip(weights, others):
        t = [x - y for x, y in zip(o.tolist(), b)]
        k = round(density * len(t))
        keep = sorted(range(len(t)), key=lambda i: -abs(t[i]))[:k]
        taus.append([w * t[i] if i in keep else 0.0 for i in range(len(t))])
    out = []
    for i in range(len(b)):
        total = sum(t[i] for t in taus)
        sign = (total > 0) - (total < 0)
        agree = [(w, t[i]) for w, t in zip(weights, taus) if t[i] != 0 and ((t[i] > 0) - (t[i] < 0)) == sign]
        out.append(b[i] + (sum(v for _, v in agree) / sum(abs(w) for w, _ in agree) if agree else 0.0))
    return torch.tensor(out)


def test_ties_equals_the_reference_on_hand_made_tensors():
    base = torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 1.5])
    others = [base + torch.tensor([0.9, -0.1, 0.3, -0.8, 0.05, 0.6, -0.2, 0.0]),
              base + torch.tensor([-0.7, 0.2, 0.4, -0.1, -0.9, 0.5, 0.1, 0.3]),
              base + torch.tensor([0.2, -0.6, -0.5, 0.7, 0.0, -0.4, 0.8, -0.2])]
    for weights, density in (([1.0, 1.0, 1.0], 0.5), ([0.5, 2.0, 1.0], 0.25), ([1.0, 1.0, 1.0], 1.0)):
        got = ties_tensor(base, others, weights, density)
        torch.testing.assert_close(got, _reference_ties(base, others, weights, density), atol=1e-6, rtol=0)
    assert trim(torch.tensor([3.0, -1.0, 0.5, -4.0]), 0.5).tolist() == [3.0, 0.0, 0.0, -4.0]


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g), "step": torch.tensor(seed)}


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_merging_copies_of_one_model_returns_it(method):
    base, model = _state(0), _state(1)
    merged = merge_states(method, base, [model, dict(model), dict(model)], [1.0, 2.0, 0.5], density=0.3)
    expected = model if method == "linear" else base  # copies of the base: zero task vectors
    if method != "linear":
        merged = merge_states(method, base, [base, dict(base)], density=0.3)
    for k in ("w", "b"):
        torch.testing.assert_close(merged[k], expected[k], atol=1e-6, rtol=1e-6)
    other = merge_states(method, base, [model, _state(2)], density=0.3)
    assert not torch.allclose(other["w"], model["w"])  # two different models do not merge to one of them


def test_bad_merges_are_one_line():
    with pytest.raises(MergeError, match="needs --base"):
        merge_states("ties", None, [_state(1)])
    with pytest.raises(MergeError, match="2 weight\\(s\\) for 1 model"):
        merge_states("linear", None, [_state(1)], [1.0, 2.0])
    with pytest.raises(MergeError, match="--density must be in"):
        merge_states("ties", _state(0), [_state(1)], density=0)
    with pytest.raises(MergeError, match="every weight must be a finite number, got nan"):
        merge_states("linear", None, [_state(1), _state(2)], [float("nan"), 1.0])
    with pytest.raises(MergeError, match="--scale must be a finite number, got inf"):
        merge_states("task_arithmetic", _state(0), [_state(1)], scale=float("inf"))


def test_models_with_other_weights_are_refused_naming_the_tensor():
    from types import SimpleNamespace

    from flexbert.weights.merging import _check_same

    def pre(state):
        return SimpleNamespace(config="same", state=state)

    extra = dict(_state(1), **{"classifier.weight": torch.zeros(2, 4)})
    with pytest.raises(MergeError, match=r"b has other weights than a: classifier.weight is only in b \(1 tensor"):
        _check_same(["a", "b"], [pre(_state(0)), pre(extra)])
    wider = dict(_state(1), b=torch.zeros(5))
    with pytest.raises(MergeError, match=r"b has other weights than a: b is \(5,\) there, \(4,\) in a"):
        _check_same(["a", "b"], [pre(_state(0)), pre(wider)])


def test_the_writer_refuses_weights_that_are_not_finite(tmp_path):
    """A diverged run or an overflowing merge is never written as a model (flexbert/weights/writer.py)."""
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig
    from flexbert.weights.writer import ModelWriter, WriteError

    model = FlexBertForMaskedLM(FlexBertConfig.from_dict(dict(vocab_size=128, hidden_size=32, intermediate_size=48,
                                                              num_hidden_layers=1, num_attention_heads=2)))
    with torch.no_grad():
        model.head.dense.weight[0, 0] = float("nan")
    with pytest.raises(WriteError, match=r"export: the model has weights that are not finite \(head.dense.weight: 1 nan, "
                                         r"0 inf of 1024\); nothing was written"):
        ModelWriter("export", str(tmp_path / "out")).write_mlm(model)
    assert not (tmp_path / "out").exists()


def test_cli_merges_exports_into_a_folder_transformers_loads(tmp_path, capsys):
    from transformers import AutoModelForMaskedLM

    from flexbert.convert.hf import to_hf
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig
    from merge_checkpoints import main

    cfg = FlexBertConfig.from_dict(dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=2, local_attention=16, pad_token_id=0, cls_token_id=1,
                                        sep_token_id=2, mask_token_id=3))
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(str(to_hf(FlexBertForMaskedLM(cfg).eval(), tmp_path / f"m{seed}")))
    out = tmp_path / "merged"
    assert main(["--method", "ties", "--base", paths[0], "--models", paths[0], paths[0], "--out", str(out)]) == 0
    ids = torch.tensor([[1, 5, 9, 17, 2]])
    merged = AutoModelForMaskedLM.from_pretrained(out).eval()
    source = AutoModelForMaskedLM.from_pretrained(paths[0]).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, source(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert json.loads((out / "flexbert_record.json").read_text())["settings"]["method"] == "ties"
    assert main(["--method", "linear", "--models", *paths, "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["--method", "linear", "--models", *paths, "--out", str(out), "--overwrite"]) == 0
