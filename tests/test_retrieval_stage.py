"""The contrastive stage (flexbert/eval/retrieval_finetune.py, contrastive.py, pairs.py), hard
negatives (flexbert/eval/hard_negatives.py), Matryoshka widths and SPLADE scoring
(flexbert/eval/retrieval.py), on a tiny encoder with real sentence-transformers, transformers and
torch.distributed (gloo) pieces."""

import json
import os
import subprocess
import sys

import pytest
import torch

from flexbert.eval.evaluation import read_result
from test_retrieval import TOPICS, _tiny_encoder, write_beir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, data):
    return str(_tiny_encoder(tmp_path_factory.mktemp("stage"), data))


def _pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _topic_pairs(path, n=4, shared=False):
    """n queries per topic; ``shared``: every query of a topic has the same positive passage."""
    return _pairs(path, [{"query": f"question {i} on the {t}",
                          "positive": f"a passage about the {t}" + ("" if shared else f" number {i}")}
                         for i in range(n) for t in TOPICS])


@pytest.mark.slow
def test_negatives_gathered_over_two_ranks_equal_one_process_on_the_global_batch(tmp_path, encoder):
    """torchrun, 2 CPU ranks (gloo), 4 rows each, negatives gathered: the loss and the DDP gradients
    of the first step equal one process's on the 8-row global batch (1e-5), with the plain loss and
    with the cached one (mini-batches of 2); each global batch is the one process's batch, and no
    passage appears twice in it although every passage is the positive of 4 queries - so no query's
    positive is ever another query's negative."""
    from retrieval_ranks import one_step

    pairs = _topic_pairs(tmp_path / "shared.jsonl", shared=True)
    out = tmp_path / "two.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           os.path.join(ROOT, "tests", "retrieval_ranks.py"), encoder, pairs, "8", "2", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = one_step(encoder, pairs, 8)
    assert one["processes"] == 1 and len(one["batches"]) == 4
    assert max(torch.tensor(g).abs().max().item() for g in one["grads"].values()) > 1e-3  # a real signal
    for kind, two in json.loads(out.read_text()).items():
        assert two["processes"] == 2 and two["batches"] == one["batches"], kind
        for batch in two["batches"]:
            assert len(batch) == 8 and len(set(batch)) == 8, (kind, batch)
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-5), kind
        assert set(two["grads"]) == set(one["grads"]) and len(one["grads"]) > 4
        for name, g in one["grads"].items():
            torch.testing.assert_close(torch.tensor(two["grads"][name]), torch.tensor(g), rtol=0, atol=1e-5,
                                       msg=lambda m: f"{kind} {name}: {m}")


def test_config_file_prompts_several_files_and_matryoshka(tmp_path, encoder, capsys):
    """--config (flags over it), two pair files drawn round robin, query/passage prompts stored in
    the saved model and applied by encode(prompt_name=...), Matryoshka widths scored one row each."""
    from sentence_transformers import SentenceTransformer

    from flexbert.cli.finetune_retrieval import main

    a = _topic_pairs(tmp_path / "a.jsonl")  # 32 rows: 8 batches of 4
    b = _pairs(tmp_path / "b.jsonl", [{"query": f"where is the {t}", "positive": f"the {t} is here"} for t in TOPICS])
    beir = write_beir(tmp_path / "beir", docs={f"d{t}": f"a passage about the {t} number 9" for t in TOPICS},
                      queries={f"q{t}": f"question 9 on the {t}" for t in TOPICS},
                      qrels=[(f"q{t}", f"d{t}", 1) for t in TOPICS])
    config = tmp_path / "retriever.yaml"
    config.write_text(f"model: {encoder}\ntrain: [{a}, {b}]\nbatch_size: 4\nlr: 1.0e-4\nmix: round_robin\n"
                      f"query_prompt: 'query: '\npassage_prompt: 'passage: '\nmatryoshka_dims: [64, 32, 16]\n"
                      f"eval: {beir}\nwarmup: 0.0\n")
    out = tmp_path / "retriever"
    assert main(["--config", str(config), "--lr", "1e-3", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    info = read_result(str(out))
    assert info.settings["lr"] == 1e-3 and info.settings["config"] == str(config)
    assert info.details["datasets"] == {"a": 32, "b": 8}
    assert info.details["steps"] == 4  # round robin stops with the smaller file: 2 batches of each
    assert [r["dim"] for r in info.details["dims"]] == [64, 32, 16]
    assert {k: info.details["dims"][0][k] for k in info.metrics["test"]} == info.metrics["test"]
    assert "dim    16: ndcg@10" in printed and not os.path.exists(out / "work")
    model = SentenceTransformer(str(out))
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    text = ["question 1 on the rain"]
    torch.testing.assert_close(model.encode(text, prompt_name="query", convert_to_tensor=True),
                               model.encode(["query: " + text[0]], convert_to_tensor=True))
    torch.testing.assert_close(model.encode_document(text, convert_to_tensor=True),  # what retrieval scoring calls
                               model.encode(["passage: " + text[0]], convert_to_tensor=True))
    assert not torch.allclose(model.encode(text, convert_to_tensor=True),
                              model.encode(text, prompt_name="query", convert_to_tensor=True))


class _Killed(Exception):
    pass


def test_a_killed_run_continues_from_its_checkpoint(tmp_path, encoder):
    """Killed after step 3 (a checkpoint at step 2 in OUT/work): the same command again continues
    from step 2 and ends with the weights of an uninterrupted run; other settings are refused."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from flexbert.eval.evaluation import run_evaluation
    from flexbert.eval.retrieval_finetune import RetrievalFinetuneConfig, finetune_retrieval

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise _Killed()

    pairs = _topic_pairs(tmp_path / "pairs.jsonl")
    options = dict(model=encoder, train=pairs, batch_size=4, max_steps=5, save_steps=2, lr=1e-3, progress=False)
    with pytest.raises(_Killed):
        finetune_retrieval(RetrievalFinetuneConfig(**options, out=str(tmp_path / "run")), callbacks=[Kill()])
    assert sorted(os.listdir(tmp_path / "run")) == ["work"] and os.path.isdir(tmp_path / "run" / "work" / "checkpoint-2")
    with pytest.raises(ValueError, match=r"work/settings.json: a killed run with lr=0.001 \(now 0.01\)"):
        run_evaluation("retrieval-finetune", {**options, "lr": 1e-2, "out": str(tmp_path / "run")})
    resumed = run_evaluation("retrieval-finetune", {**options, "out": str(tmp_path / "run")})
    whole = run_evaluation("retrieval-finetune", {**options, "out": str(tmp_path / "whole")})
    assert resumed.details["resumed_from"].endswith("checkpoint-2") and whole.details["resumed_from"] is None
    assert resumed.details["steps"] == whole.details["steps"] == 5
    assert resumed.details["losses"] == pytest.approx(whole.details["losses"], abs=1e-4)
    got, want = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("run", "whole"))
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
    assert not os.path.exists(tmp_path / "run" / "work")


def test_bad_inputs_are_one_line_naming_file_and_key(tmp_path, encoder, capsys):
    from flexbert.cli.eval_retrieval import main as eval_main
    from flexbert.cli.finetune_retrieval import main

    pairs = _pairs(tmp_path / "pairs.jsonl", [{"question": "q", "positive": "p"}, {"question": "r", "positive": "s"}])
    assert main(["--model", encoder, "--train", pairs, "--out", str(tmp_path / "o")]) == 2
    assert "pairs.jsonl:1: no column 'query' (columns: question, positive; name yours with --query-column)" in capsys.readouterr().err
    config = tmp_path / "stage.yaml"
    config.write_text("batchsize: 8\n")
    assert main(["--config", str(config), "--model", encoder, "--train", pairs, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "stage.yaml: unknown config key 'batchsize' (did you mean 'batch_size'?)" in err and len(err.splitlines()) == 1
    config.write_text("matryoshka_dims: 64\n")
    assert main(["--config", str(config), "--model", encoder, "--train", pairs, "--out", str(tmp_path / "o")]) == 2
    assert "stage.yaml: matryoshka_dims: expected" in capsys.readouterr().err
    beir = write_beir(tmp_path / "beir")
    assert eval_main(["--model", encoder, "--data", beir, "--query-prompt-name", "search_query"]) == 2
    err = capsys.readouterr().err
    assert f"{encoder}: no prompt 'search_query' in its config_sentence_transformers.json" in err, err
    assert len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "o")


def test_mined_negatives_bm25_and_dense(tmp_path, encoder):
    """BM25: each pair's negative is the best other passage, never its own; the relative margin
    refuses a passage scoring above the positive (a probable false negative).  Dense: through
    sentence-transformers' mine_hard_negatives, never the pair's positive; the file is triplets."""
    from flexbert.cli.mine_negatives import main
    from flexbert.eval.pairs import read_pairs

    rows = [{"query": "apple banana", "positive": "banana smoothie"},
            {"query": "cherry pie", "positive": "cherry pie recipe"},
            {"query": "grape juice", "positive": "grape juice at breakfast"}]
    extra = [{"query": "x1", "positive": "apple banana cake"}, {"query": "x2", "positive": "cherry orchard"},
             {"query": "x3", "positive": "lemon juice"}]
    pairs = _pairs(tmp_path / "pairs.jsonl", rows + extra)
    out = tmp_path / "triplets.jsonl"
    assert main(["--pairs", pairs, "--out", str(out)]) == 0
    got = {r["query"]: r["negative"] for r in map(json.loads, out.read_text().splitlines())}
    assert got["apple banana"] == "apple banana cake" and got["cherry pie"] == "cherry orchard"
    assert got["grape juice"] == "lemon juice"
    assert main(["--pairs", pairs, "--out", str(out), "--overwrite", "--relative-margin", "0"]) == 0
    got = {r["query"]: r["negative"] for r in map(json.loads, out.read_text().splitlines())}
    assert got.get("apple banana") != "apple banana cake"  # it outscores the positive "banana smoothie"
    assert main(["--pairs", pairs, "--out", str(out), "--overwrite", "--miner", "dense", "--model", encoder,
                 "--num-negatives", "2"]) == 0
    table = read_pairs(str(out))
    assert len(table["anchor"]) == 12 and all(n != p for p, n in zip(table["positive"], table["negative"]))
    assert main(["--pairs", pairs, "--out", str(out)]) == 2  # exists: --overwrite


def test_splade_trains_and_is_scored_beside_bm25(tmp_path, encoder, capsys):
    """--sparse: SPLADE on the MLM head, saved as a SparseEncoder; eval-retrieval scores it as one
    (dot product of sparse vectors) with BM25 beside it in result.json."""
    from flexbert.cli.eval_retrieval import main as eval_main
    from flexbert.cli.finetune_retrieval import main

    pairs = _topic_pairs(tmp_path / "pairs.jsonl", n=1)
    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "splade"
    assert main(["--model", encoder, "--train", pairs, "--sparse", "--batch-size", "4", "--max-steps", "2",
                 "--lr", "1e-3", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "config_sentence_transformers.json").read_text())["model_type"] == "SparseEncoder"
    assert eval_main(["--model", str(out), "--bm25", "--data", beir, "--out", str(tmp_path / "scored")]) == 0
    result = read_result(str(tmp_path / "scored"))
    assert result.model["sparse"] is True and set(result.metrics["test"]) == {"ndcg@10", "mrr@10", "recall@100"}
    assert all(0 <= v <= 1 for v in result.metrics["test"].values()) and result.details["bm25"]["recall@100"] == 1.0
    assert capsys.readouterr().out.count(" on ") == 2


def test_the_seed_sets_the_batch_order(tmp_path, encoder):
    """--seed reaches the no-duplicates batch sampler: two seeds give two batch orders, one seed
    the same order twice (sentence-transformers 5.1.2 alone builds the sampler with seed 0)."""
    from flexbert.eval.contrastive import build_loss, build_trainer, training_args
    from flexbert.eval.pairs import pair_datasets
    from flexbert.eval.retrieval_finetune import RetrievalFinetuneConfig, _load

    pairs = _topic_pairs(tmp_path / "pairs.jsonl", n=4)

    def order(seed):
        cfg = RetrievalFinetuneConfig(model=encoder, train=pairs, out=str(tmp_path / f"out{seed}"), seed=seed,
                                      batch_size=4, progress=False)
        data, _, _ = pair_datasets(cfg.train_files, batch_size=cfg.batch_size, seed=seed)
        _, model = _load(cfg)
        args = training_args(cfg, str(tmp_path / f"work{seed}"), 1, None)
        trainer = build_trainer(model, data, build_loss(model, cfg, 1), args)
        return [list(b) for b in trainer.get_train_dataloader().batch_sampler]

    assert order(17) == order(17)
    assert order(17) != order(18)
