"""flexbert eval-mlm (scripts/eval_mlm.py): a run folder, its checkpoint and its Hugging Face export give the same held-out
MLM loss and accuracy, equal to the training run's own evaluation (same shards, rate and seed)."""

import os
import subprocess

import pytest

from test_train_fixtures import PY, ROOT, build_and_fit, read_jsonl, run_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("eval_mlm")
    # evaluations at batch 4 and, as Composer closes training off the interval, at batch 6
    cfg = run_config(tmp, data, max_duration="6ba", eval_interval="4ba", eval_subset_num_batches=3, save_interval="6ba")
    build_and_fit(cfg)
    from flexbert.weights.export import export_to_hf

    export_to_hf(str(tmp / "hf"), run_dir=cfg["run_dir"])
    last_eval = [r for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if "metrics/eval/MLMLoss" in r][-1]
    return cfg["run_dir"], str(tmp / "hf"), last_eval


def test_run_checkpoint_and_hf_folder_agree_with_training_eval(trained, data):
    from flexbert.weights.load import load_pretrained, mlm_model
    from flexbert.eval.mlm import data_config, evaluate_mlm, mlm_loader

    run_dir, hf, last_eval = trained
    results = {}
    run_data = load_pretrained(run_dir).data  # the run's row shape and packing
    for name, path in (("run", run_dir), ("checkpoint", os.path.join(run_dir, "checkpoints", "ba6.pt")), ("hf", hf)):
        pre = load_pretrained(path)
        assert pre.kind == name
        results[name] = evaluate_mlm(mlm_model(pre), mlm_loader(data_config(data, run_data=run_data)), max_batches=3)
    ref = results["run"]
    assert ref["masked_tokens"] > 50 and ref["rows"] == 3
    for name in ("checkpoint", "hf"):
        assert results[name]["masked_tokens"] == ref["masked_tokens"]
        assert results[name]["loss"] == pytest.approx(ref["loss"], abs=1e-5)
        assert results[name]["accuracy"] == ref["accuracy"]
    # the training run's closing evaluation (written after the final record) saw the same 3 rows
    # at 15% masking with seed 1234
    assert last_eval["kind"] == "eval" and last_eval["batch"] == 6
    assert ref["loss"] == pytest.approx(last_eval["metrics/eval/MLMLoss"], abs=1e-5)
    assert ref["accuracy"] == pytest.approx(last_eval["metrics/eval/MLMAccuracy"], abs=1e-7)
    # another masking rate masks other tokens: a different number of them
    other = evaluate_mlm(mlm_model(load_pretrained(run_dir)), mlm_loader(data_config(data, mlm_probability=0.3, run_data=run_data)),
                         max_batches=3)
    assert other["masked_tokens"] > 1.5 * ref["masked_tokens"]


@pytest.mark.slow
def test_cli(trained, data, capsys):
    run_dir, _, _ = trained
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([PY, "scripts/eval_mlm.py", "--model", run_dir, "--data", data, "--max-batches", "2", "--json",
                          "--by-length", "24", "64"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows"] == 2 and out["mlm_probability"] == 0.15 and 0 < out["loss"] < 20
    # per document-length range: the ranges add up to the whole, each with its own count
    buckets = out["by_length"]
    assert [b["range"] for b in buckets] == ["len-0-23", "len-24-63", "len-64-max"]
    assert sum(b["masked_tokens"] for b in buckets) == out["masked_tokens"]
    whole = sum(b["loss"] * b["masked_tokens"] for b in buckets if b["masked_tokens"]) / out["masked_tokens"]
    assert whole == pytest.approx(out["loss"], rel=1e-4) and sum(b["documents"] > 0 for b in buckets) >= 2
    from flexbert.cli.eval_mlm import main  # what the script runs; in this process (a second one costs ~15 s)

    capsys.readouterr()
    assert main(["--model", os.path.join(run_dir, "nope"), "--data", data]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --model {os.path.join(run_dir, 'nope')}: does not exist "
                                               "(give a run folder, a checkpoint or a Hugging Face folder)")


def test_training_eval_mlm_and_phase_chain_agree_to_the_last_digit(trained, data):
    """One evaluation loop (flexbert/eval/mlm.py over training's row_outputs): Composer's evaluator in
    training, eval-mlm's evaluate_mlm and the phase chain's length evaluation give the same float on
    the same rows."""
    from flexbert.eval.mlm import data_config, evaluate_mlm, mlm_loader
    from flexbert.experiments.phases import length_losses
    from flexbert.weights.load import load_pretrained, mlm_model
    from flexbert.train.run_folder import RunFolder

    run_dir, _, last_eval = trained
    run = RunFolder(run_dir)
    cfg = run.load_config()
    ckpt = run.newest_checkpoint()
    chain = length_losses(cfg, ckpt, [cfg])["loss@128"]
    pre = load_pretrained(run_dir)
    script = evaluate_mlm(mlm_model(pre), mlm_loader(data_config(data, run_data=pre.data)), max_batches=3)["loss"]
    assert chain == script == last_eval["metrics/eval/MLMLoss"], (chain, script, last_eval["metrics/eval/MLMLoss"])


def test_loss_by_length_attributes_each_masked_token_to_its_document():
    """evaluate_mlm's by-length breakdown on two hand-packed rows against a second implementation written out
    here (a full forward's logits, a loop over documents): documents of 7, 8, 15, 16, 17 and 16, 9,
    3 tokens with a padding tail, bounds (8, 16); the first and last token of every document are
    masked, so a token at a packing boundary charged to its neighbour, or an edge moved by one,
    changes the counts.  Expected documents per range: len-0-7 {7, 3} = 2, len-8-15 {8, 15, 9} = 3,
    len-16-max {16, 17, 16} = 3 (the padding segments are no documents)."""
    import torch

    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig
    from flexbert.eval.mlm import evaluate_mlm
    from test_train_fixtures import model_overrides

    torch.manual_seed(0)
    model = FlexBertForMaskedLM(FlexBertConfig.from_dict(model_overrides(vocab=100, hidden=32, layers=2))).eval()
    g = torch.Generator().manual_seed(1)
    rows, docs_of_row = [], []
    for lengths, pad in (([7, 8, 15, 16, 17], 3), ([16, 9, 3], 4)):
        real = sum(lengths)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist(), real + pad], dtype=torch.int32)
        ids = torch.randint(5, 100, (real + pad,), generator=g)
        ids[real:] = 0
        labels = torch.full_like(ids, -100)
        for a, b in zip(cu[:-2].tolist(), cu[1:-1].tolist()):
            labels[[a, b - 1, (a + b) // 2]] = torch.randint(5, 100, (3,), generator=g)
        rows.append(dict(input_ids=ids, labels=labels, cu_seqlens=cu, max_seqlen=max(lengths + [pad]), num_tokens=real))
        docs_of_row.append(lengths)
    by_length = evaluate_mlm(model, [{"rows": rows[:1]}, {"rows": rows[1:]}], bounds=(8, 16))["by_length"]
    got = {r["range"]: r for r in by_length}

    want = {name: {"documents": 0, "masked": 0, "loss": 0.0, "hits": 0} for name in ("len-0-7", "len-8-15", "len-16-max")}
    with torch.no_grad():
        for row, lengths in zip(rows, docs_of_row):
            logits = model(input_ids=row["input_ids"], cu_seqlens=row["cu_seqlens"], max_seqlen=row["max_seqlen"]).logits
            start = 0
            for n in lengths:
                name = "len-0-7" if n < 8 else ("len-8-15" if n < 16 else "len-16-max")
                want[name]["documents"] += 1
                for p in range(start, start + n):
                    if row["labels"][p] != -100:
                        want[name]["masked"] += 1
                        want[name]["loss"] += float(torch.nn.functional.cross_entropy(logits[p], row["labels"][p]))
                        want[name]["hits"] += int(logits[p].argmax() == row["labels"][p])
                start += n
    assert [got[n]["documents"] for n in want] == [2, 3, 3] == [w["documents"] for w in want.values()]
    assert [got[n]["masked_tokens"] for n in want] == [6, 9, 9] == [w["masked"] for w in want.values()]
    for name, w in want.items():
        assert got[name]["loss"] == pytest.approx(w["loss"] / w["masked"], abs=1e-5), name
        assert got[name]["accuracy"] == pytest.approx(w["hits"] / w["masked"]), name
