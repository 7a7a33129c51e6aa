"""Fine-tuning: a tiny model learns a clearly separable synthetic task (>= 95% accuracy on CPU), the
result exports to transformers' ModernBertForSequenceClassification with its label names and the
same logits, and bad inputs stop with one line."""

import json
import os
import random

import pytest
import torch

from test_train_fixtures import ROOT, model_overrides

GOOD = "class function module".split()
BAD = "error exception warning".split()
FILLER = "the value of a new object is returned by this method when it is called with an argument".split()


def write_task(folder, n_train=320, n_eval=80, seed=0):
    rng = random.Random(seed)

    def example(label):
        words = rng.sample(FILLER, 6) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        return {"text": " ".join(words), "label": "pos" if label else "neg"}

    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
            for i in range(n):
                f.write(json.dumps(example(i % 2)) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, data):
    """A freshly initialised tiny encoder exported as a Hugging Face ModernBERT folder."""
    from flexbert.model.config import FlexBertConfig
    from flexbert.convert.hf import to_hf
    from flexbert.model.model import FlexBertForMaskedLM

    torch.manual_seed(0)
    cfg = FlexBertConfig.from_dict(model_overrides(attn_out_dropout=0.0))
    out = tmp_path_factory.mktemp("tiny_hf") / "hf"
    to_hf(FlexBertForMaskedLM(cfg), out, tokenizer=os.path.join(data, "tokenizer", "tokenizer.json"))
    return str(out)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_hf):
    from flexbert.eval.evaluation import run_evaluation
    from flexbert.eval.finetune import FinetuneConfig

    tmp = tmp_path_factory.mktemp("ft")
    task = write_task(str(tmp / "task"))
    cfg = FinetuneConfig(model=tiny_hf, train=f"{task}/train.jsonl", validation=f"{task}/validation.jsonl",
                         test=f"{task}/test.jsonl", text_columns=["text"], out=str(tmp / "out"),
                         lr=2e-3, epochs=4, batch_size=16, seed=3, patience=0)
    return cfg, run_evaluation("classification", cfg)


def test_separable_task_reaches_95_percent(finetuned):
    from flexbert.eval.evaluation import read_result

    cfg, result = finetuned
    metrics, details = result.metrics, result.details
    assert metrics["validation"]["accuracy"] >= 0.95 and metrics["test"]["accuracy"] >= 0.95
    assert set(metrics["validation"]) == {"accuracy", "f1", "matthews_correlation"}
    written = read_result(cfg.out)
    assert written.task == "classification" and written.metrics == metrics and written.metric("test_f1") == metrics["test"]["f1"]
    assert written.settings["lr"] == cfg.lr and written.model["kind"] == "hf"
    assert details["label_names"] == ["neg", "pos"] and len(details["history"]) == 4
    assert details["history"][details["best_epoch"] - 1]["accuracy"] == metrics["validation"]["accuracy"]
    steps = [json.loads(line) for line in open(os.path.join(cfg.out, "metrics.jsonl"))]
    losses = [r["loss/train/total"] for r in steps if "loss/train/total" in r]
    assert len(losses) == 4 * 320 // 16 and sum(losses[-10:]) < sum(losses[:10])


def test_export_to_transformers_keeps_labels_and_logits(finetuned):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from flexbert.eval.finetune import predict
    from flexbert.weights.load import classifier_model, load_pretrained

    cfg, result = finetuned
    hf_dir = os.path.join(cfg.out, "hf")
    hf = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    assert type(hf).__name__ == "ModernBertForSequenceClassification"
    assert hf.config.id2label == {0: "neg", 1: "pos"} and hf.config.label2id == {"neg": 0, "pos": 1}
    texts = [json.loads(line)["text"] for line in open(cfg.validation)]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hf_logits = hf(**enc).logits
    pre = load_pretrained(hf_dir)
    assert pre.label_names == ["neg", "pos"]
    ours = classifier_model(pre, 2).eval()
    from flexbert.eval.data import EncodedTask

    packed = predict(ours, EncodedTask([ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"])]))
    assert (packed - hf_logits).abs().max() <= 1e-4
    labels = [1 if json.loads(line)["label"] == "pos" else 0 for line in open(cfg.validation)]
    hf_acc = (hf_logits.argmax(-1) == torch.tensor(labels)).float().mean().item()
    assert hf_acc == pytest.approx(result.metrics["validation"]["accuracy"])


@pytest.mark.parametrize("num_labels,pooling", [(3, "mean"), (1, "cls")])
def test_classifier_export_parity(tmp_path, num_labels, pooling):
    from transformers import AutoModelForSequenceClassification

    from flexbert.model.config import FlexBertConfig
    from flexbert.convert.hf import to_hf_classifier
    from flexbert.model.model import FlexBertForSequenceClassification

    torch.manual_seed(1)
    cfg = FlexBertConfig.from_dict(model_overrides(num_labels=num_labels, classifier_pooling=pooling, head_bias=True))
    ours = FlexBertForSequenceClassification(cfg).eval()
    names = ["a", "b", "c"] if num_labels == 3 else None
    to_hf_classifier(ours, tmp_path / "hf", names)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.problem_type == ("regression" if num_labels == 1 else "single_label_classification")
    ids = torch.randint(5, 1000, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 7:] = 0
    with torch.no_grad():
        diff = (ours(ids, attention_mask=mask).logits - hf(input_ids=ids, attention_mask=mask).logits).abs().max()
    assert diff <= 1e-4


VALUE_OF = {"error": 0.0, "module": 2.0, "class": 5.0}  # the label is a function of one word


def _r2(target, preds):
    mean = sum(target) / len(target)
    return 1 - sum((t - p) ** 2 for t, p in zip(target, preds)) / sum((t - mean) ** 2 for t in target)


def test_regression_learns_more_than_the_mean(tmp_path, tiny_hf):
    """A score that is a function of one word among filler (error 0, module 2, class 5): the
    fine-tuned model's test predictions (written for an unlabelled test file) explain most of the
    variance, R^2 > 0.5, which no constant does: the training mean scores R^2 <= 0 on the test set."""
    from flexbert.eval.evaluation import run_evaluation
    from flexbert.eval.finetune import FinetuneConfig

    rng = random.Random(1)
    targets = {}
    for split, n in (("train", 96), ("validation", 24), ("test", 24)):
        targets[split] = []
        with open(tmp_path / f"{split}.csv", "w") as f:
            f.write("text,score\n" if split != "test" else "text\n")
            for i in range(n):
                word = list(VALUE_OF)[i % 3]
                words = rng.sample(FILLER, 5) + [word]
                rng.shuffle(words)
                targets[split].append(VALUE_OF[word])
                f.write(" ".join(words) + (f",{VALUE_OF[word]}\n" if split != "test" else "\n"))
    cfg = FinetuneConfig(model=tiny_hf, train=str(tmp_path / "train.csv"), validation=str(tmp_path / "validation.csv"),
                         test=str(tmp_path / "test.csv"), text_columns=["text"], label_column="score", task="regression",
                         out=str(tmp_path / "out"), lr=3e-3, epochs=3, batch_size=8, seed=3, patience=0)
    result = run_evaluation("regression", cfg)
    assert set(result.metrics["validation"]) == {"pearson", "spearman"} and result.details["metric"] == "pearson"
    lines = open(tmp_path / "out" / "test_predictions.tsv").read().splitlines()
    preds = [float(line.split("\t")[1]) for line in lines[1:]]
    train_mean = sum(targets["train"]) / len(targets["train"])
    assert _r2(targets["test"], [train_mean] * len(preds)) <= 0.0  # what the mean predictor gets
    assert _r2(targets["test"], preds) > 0.5, (_r2(targets["test"], preds), preds[:9])
    assert result.metrics["validation"]["pearson"] > 0.9, result.metrics
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "out" / "hf").num_labels == 1


def test_cli_bad_column_is_one_line(tmp_path, tiny_hf, capsys):
    """In this process (the command's ``main``, what scripts/finetune.py and ``flexbert finetune`` run):
    a process of its own cost ~15 s of imports for the same line."""
    from flexbert.cli.finetune import main

    task = write_task(str(tmp_path / "task"), 4, 4)
    capsys.readouterr()
    assert main(["--model", tiny_hf, "--train", f"{task}/train.jsonl", "--validation", f"{task}/validation.jsonl",
                 "--text-columns", "sentence", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {task}/train.jsonl: text column 'sentence' not found; columns: text, label"


def test_finetune_sweep_with_a_base_runs(tmp_path, tiny_hf):
    """A fine-tuning sweep's ``base`` is a YAML of finetune.py options (scripts/finetune.py --config)."""
    import yaml

    from flexbert.experiments import sweep as S

    task = write_task(str(tmp_path / "task"), 16, 8)
    base = tmp_path / "ft-base.yaml"
    base.write_text(yaml.safe_dump({"model": tiny_hf, "train": f"{task}/train.jsonl", "validation": f"{task}/validation.jsonl",
                                    "text_columns": ["text"], "epochs": 1, "batch_size": 8, "max_seq_len": 32}))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"kind": "finetune", "base": str(base), "out": str(tmp_path / "out"),
                                    "grid": {"lr": [1e-3]}}))
    sw = S.load_sweep(str(path))
    assert S.run_all(sw) == []
    from flexbert.eval.evaluation import read_result

    result = read_result(S.run_dir(sw, sw.runs[0]))
    assert set(result.metrics["validation"]) == {"accuracy", "f1", "matthews_correlation"}


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "epochs: must be >= 1, got 0"),
    ("--batch-size", "0", "batch_size: must be >= 1, got 0"),
    ("--lr", "-1e-4", "lr: must be > 0, got -0.0001"),
    ("--warmup", "1.5", "warmup: a fraction of the run in [0, 1), got 1.5"),
])
def test_cli_bad_numbers_are_one_line(tmp_path, capsys, flag, value, message):
    """Invalid numbers are refused where they are parsed, before anything is loaded or written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_cli", os.path.join(ROOT, "scripts", "finetune.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(["--model", "m", "--train", "t", "--validation", "v", "--out", str(tmp_path / "o"), f"{flag}={value}"])
    assert (rc, capsys.readouterr().err.strip()) == (2, f"error: {message}")
    assert not (tmp_path / "o").exists()
