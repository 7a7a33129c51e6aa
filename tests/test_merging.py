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


def test_task_arithmetic_equals_tensors_computed_by_hand():
    """theta_base + scale * sum_i w_i * (theta_i - theta_base), on numbers worked out here:
    tau_1 = m1 - b = [1, -2, 0], tau_2 = m2 - b = [0, 3, 2]; with weights (2, -0.5) the weighted sum
    is [2, -4, 0] + [0, -1.5, -1] = [2, -5.5, -1]; times scale 0.5 is [1, -2.75, -0.5]; plus b."""
    b, m1, m2 = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 5.0, 1.0])
    merged = merge_states("task_arithmetic", {"w": b}, [{"w": m1}, {"w": m2}], [2.0, -0.5], scale=0.5)
    assert merged["w"].tolist() == [2.0, -0.75, -1.5]
    # each neighbour of the formula gives other numbers: a flipped task vector (b - m) gives
    # [0, 4.75, -0.5], weights ignored [1.5, 2.5, 0], scale ignored [3, -3.5, -2]
    assert merge_states("task_arithmetic", {"w": b}, [{"w": m1}, {"w": m2}])["w"].tolist() == [2.0, 3.0, 1.0]
    assert merge_states("task_arithmetic", {"w": b}, [{"w": m1}], scale=-1.0)["w"].tolist() == [0.0, 4.0, -1.0]


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
    # --weights and --scale reach the merge: task arithmetic of (m1, m1) over m0 with weights (2, -0.5)
    # and scale 0.5 is m0 + 0.5 * 1.5 * (m1 - m0) in every tensor (weights ignored would give m1,
    # scale ignored m0 + 1.5 (m1 - m0), a flipped sign m0 - 0.75 (m1 - m0))
    ta = tmp_path / "ta"
    assert main(["--method", "task_arithmetic", "--base", paths[0], "--models", paths[1], paths[1], "--weights", "2",
                 "-0.5", "--scale", "0.5", "--out", str(ta)]) == 0
    b, m = (AutoModelForMaskedLM.from_pretrained(p).state_dict() for p in paths)
    got = AutoModelForMaskedLM.from_pretrained(ta).state_dict()
    moved = [k for k in b if torch.is_floating_point(b[k]) and not torch.equal(b[k], m[k])]
    assert "model.layers.1.attn.Wqkv.weight" in moved
    for k in moved:
        torch.testing.assert_close(got[k], b[k] + 0.75 * (m[k] - b[k]), atol=1e-6, rtol=0, msg=k)
    assert main(["--method", "linear", "--models", *paths, "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["--method", "linear", "--models", *paths, "--out", str(out), "--overwrite"]) == 0


# --------------------------------------------------------------------------- fine-tuned task models
FILLER = "the value of a new object is returned by this method when it is called with an argument".split()


def _write_task(folder, words: dict, n=192, seed=0):
    """A separable two-label task: each text holds one keyword of its label among filler words."""
    import random

    rng, names = random.Random(seed), sorted(words)
    os.makedirs(folder, exist_ok=True)
    for split, count in (("train", n), ("validation", 64)):
        with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
            for i in range(count):
                label = names[i % 2]
                text = rng.sample(FILLER, 6) + [rng.choice(words[label])]
                rng.shuffle(text)
                f.write(json.dumps({"text": " ".join(text), "label": label}) + "\n")
    return folder


def _finetune(base, task, out, steps=60, seed=3):
    """A classifier fine-tuned from ``base`` on ``task`` (a plain PyTorch loop: the test needs task
    models, not the trainer) and written as `flexbert finetune` writes OUT/hf."""
    import torch.nn.functional as F

    from flexbert.eval.data import EncodedTask, encode_texts, loader
    from flexbert.weights.load import classifier_model, load_pretrained
    from flexbert.weights.writer import ModelWriter

    rows = [json.loads(line) for line in open(os.path.join(task, "train.jsonl"))]
    names = sorted({r["label"] for r in rows})
    data = EncodedTask(encode_texts(base, [(r["text"],) for r in rows], 128), [names.index(r["label"]) for r in rows])
    pre = load_pretrained(base)
    torch.manual_seed(seed)
    model = classifier_model(pre, len(names)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = iter(())
    for _ in range(steps):
        batch = next(batches, None) or next(batches := iter(loader(data, 32, shuffle=True, seed=seed)))
        logits = model(input_ids=batch["input_ids"], cu_seqlens=batch["cu_seqlens"], max_seqlen=int(batch["max_seqlen"])).logits
        F.cross_entropy(logits, batch["labels"]).backward()
        opt.step()
        opt.zero_grad()
    writer = ModelWriter("finetune", out, inputs=[base, task])
    writer.tokenizer(base, pre.tokenizer_fingerprint, f"model {base}", pre.config.vocab_size)
    writer.write_classifier(model.eval(), names)
    writer.record([base], {"task": "classification", "train": task})
    return out


@pytest.fixture(scope="module")
def task_models(tmp_path_factory, data):
    """A tiny pretrained-style base (Hugging Face folder) and two classifiers fine-tuned from it on
    two different tasks, each above 90% on its own validation file."""
    from flexbert.convert.hf import to_hf
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig
    from test_train_fixtures import model_overrides

    tmp = tmp_path_factory.mktemp("task_models")
    torch.manual_seed(0)
    base = str(to_hf(FlexBertForMaskedLM(FlexBertConfig.from_dict(model_overrides(attn_out_dropout=0.0))), tmp / "base",
                     tokenizer=os.path.join(data, "tokenizer", "tokenizer.json")))
    tasks = {"sentiment": {"neg": "error exception warning".split(), "pos": "class function module".split()},
             "topic": {"data": "list tuple dict".split(), "flow": "loop branch return".split()}}
    models, dirs = [], []
    for name, words in tasks.items():
        task = _write_task(str(tmp / f"{name}-task"), words)
        models.append(_finetune(base, task, str(tmp / name / "hf")))
        dirs.append(task)
        assert _accuracy(models[-1], task) >= 0.9
    return base, models, dirs


def _accuracy(folder, task):
    """The classifier in ``folder`` (loaded as every evaluation loads --model) on ``task``'s validation file."""
    from flexbert.eval.data import EncodedTask, encode_texts
    from flexbert.eval.finetune import predict
    from flexbert.weights.load import load_model

    loaded = load_model(folder, "classifier", num_labels=2)
    rows = [json.loads(line) for line in open(os.path.join(task, "validation.jsonl"))]
    data = EncodedTask(encode_texts(folder, [(r["text"],) for r in rows], 128))
    preds = predict(loaded.model, data).argmax(-1).tolist()
    return sum(loaded.label_names[p] == r["label"] for p, r in zip(preds, rows)) / len(rows)


@pytest.mark.parametrize("method", ["ties", "task_arithmetic"])
def test_fine_tuned_classifiers_of_one_base_merge_their_encoder_and_keep_their_heads(tmp_path, task_models, method, capsys):
    from safetensors.torch import load_file

    from merge_checkpoints import main

    base, (sentiment, topic), (sentiment_task, topic_task) = task_models
    out = tmp_path / "merged"
    assert main(["--method", method, "--base", base, "--models", sentiment, topic, "--out", str(out)]) == 0
    assert "each keeps its own classification head" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["sentiment", "topic"]
    merged, own = load_file(out / "sentiment" / "model.safetensors"), load_file(os.path.join(sentiment, "model.safetensors"))
    assert torch.equal(merged["classifier.weight"], own["classifier.weight"])  # the head is the task's own
    assert not torch.equal(merged["model.layers.0.attn.Wqkv.weight"], own["model.layers.0.attn.Wqkv.weight"])  # merged
    assert _accuracy(str(out / "sentiment"), sentiment_task) >= 0.75 and _accuracy(str(out / "topic"), topic_task) >= 0.75
    record = json.loads((out / "topic" / "flexbert_record.json").read_text())
    assert record["settings"]["heads"] == "keep" and record["settings"]["head"] == topic

    dropped = tmp_path / "encoder"
    assert main(["--method", method, "--base", base, "--models", sentiment, topic, "--heads", "drop", "--out", str(dropped)]) == 0
    mlm = load_file(dropped / "model.safetensors")
    assert not any("classifier" in k for k in mlm)
    assert torch.equal(mlm["model.layers.0.attn.Wqkv.weight"], merged["model.layers.0.attn.Wqkv.weight"])
    assert main(["--method", method, "--models", sentiment, topic, "--heads", "drop", "--out", str(tmp_path / "x")]) == 2
    assert "needs --base" in capsys.readouterr().err and not (tmp_path / "x").exists()  # the method's own need first
    # a linear merge needs no base, but dropping the heads does (its MLM head comes from --base)
    assert main(["--method", "linear", "--models", sentiment, topic, "--heads", "drop", "--out", str(tmp_path / "x")]) == 2
    assert "--heads drop writes a masked-LM folder" in capsys.readouterr().err and not (tmp_path / "x").exists()
