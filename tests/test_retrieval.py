"""Retrieval evaluation (flexbert/eval/retrieval.py, scripts/eval_retrieval.py): a tiny BEIR folder
with a known BM25 ranking gives the nDCG@10 / MRR@10 / Recall@100 computed here by hand, the
metric code agrees with sentence-transformers' InformationRetrievalEvaluator on a dense model,
and bad folders are one line."""

import json
import math
import os
import sys

import pytest

from flexbert.eval.evaluation import read_result

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

DOCS = {"d1": "apple banana", "d2": "apple kiwi", "d3": "cherry cherry", "d4": "cherry lemon", "d5": "elderberry fig",
        "d6": "grape melon"}
QUERIES = {"q1": "apple banana", "q2": "cherry", "q3": "elderberry"}
QRELS = [("q1", "d2", 1), ("q2", "d3", 2), ("q2", "d4", 1), ("q3", "d5", 1)]


def write_beir(folder, docs=DOCS, queries=QUERIES, qrels=QRELS):
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs.items())
    with open(os.path.join(folder, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items())
    with open(os.path.join(folder, "qrels", "test.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return str(folder)


def test_bm25_on_a_known_ranking_gives_the_metrics_computed_by_hand(tmp_path, capsys):
    from eval_retrieval import main

    from flexbert.data.beir import load_beir
    from flexbert.eval.retrieval import rank_bm25

    folder = write_beir(tmp_path / "beir")
    ranked = rank_bm25(load_beir(folder))
    assert ranked["q1"][:2] == ["d1", "d2"] and ranked["q2"][:2] == ["d3", "d4"] and ranked["q3"][0] == "d5"
    # q1: its one relevant document at rank 2; q2: both relevant at ranks 1, 2 (gains 2, 1): ideal; q3: rank 1
    ndcg = ((1 / math.log2(3)) / 1 + 1 + 1) / 3
    mrr = (1 / 2 + 1 + 1) / 3
    assert main(["--bm25", "--data", folder, "--json", "--out", str(tmp_path / "out")]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ndcg@10"] == pytest.approx(ndcg) and got["mrr@10"] == pytest.approx(mrr) and got["recall@100"] == 1.0
    assert got["queries"] == 3 and got["documents"] == 6
    saved = read_result(str(tmp_path / "out"))
    assert saved.task == "retrieval" and saved.model["ref"] == "bm25" and saved.settings["split"] == "test"
    assert saved.metrics == {"test": {k: got[k] for k in ("ndcg@10", "mrr@10", "recall@100")}}
    # recall@100 counts relevant documents past rank 10: q1 has 12 relevant ones, 11 of them found
    many = {f"x{i}": f"apple banana filler{i}" for i in range(11)}
    folder2 = write_beir(tmp_path / "beir2", docs=dict(DOCS, **many), qrels=[("q1", d, 1) for d in list(many) + ["d9"]])
    assert main(["--bm25", "--data", folder2, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["recall@100"] == pytest.approx(11 / 12) and got["queries"] == 1
    # a second run into the same --out needs --overwrite
    assert main(["--bm25", "--data", folder, "--out", str(tmp_path / "out")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_run_folder_is_exported_and_scored_beside_bm25(tmp_path, trained, capsys):
    """--model RUN exports the run first (the one export path) and scores it as the export itself
    would be scored; --bm25 beside it lands under "bm25"."""
    from eval_retrieval import main

    from flexbert.weights.export import export_to_hf

    cfg, _ = trained
    folder = write_beir(tmp_path / "beir")
    export_to_hf(str(tmp_path / "hf"), run_dir=cfg["run_dir"])
    assert main(["--model", str(tmp_path / "hf"), "--data", folder, "--json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert main(["--model", cfg["run_dir"], "--bm25", "--data", folder, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.splitlines()
    saved = read_result(str(tmp_path / "out"))
    for k in ("ndcg@10", "mrr@10", "recall@100"):
        assert saved.metric(f"test_{k}") == pytest.approx(direct[k], abs=1e-6)
    assert saved.model["ref"] == cfg["run_dir"] and saved.model["kind"] == "run" and saved.details["bm25"]["recall@100"] == 1.0
    assert len(printed) == 2 and printed[1].startswith("bm25 on ")


def test_metrics_agree_with_sentence_transformers_evaluator(tmp_path, data):
    """The same dense model scored by ranking_metrics and by sentence-transformers' own evaluator
    (binary relevance, cosine): the metric code is checked against a maintained implementation."""
    import torch
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from flexbert.convert.hf import to_hf
    from flexbert.convert.sentence import write_sentence_transformers
    from flexbert.data.beir import Beir
    from flexbert.eval.retrieval import rank_dense, ranking_metrics
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.weights.load import load_model
    from flexbert.model.config import FlexBertConfig
    from test_train_fixtures import model_overrides

    torch.manual_seed(0)
    out = tmp_path / "enc"
    to_hf(FlexBertForMaskedLM(FlexBertConfig.from_dict(model_overrides())).eval(), out,
          tokenizer=os.path.join(data, "tokenizer", "tokenizer.json"))
    write_sentence_transformers(str(out), 64, 128, "mean")
    model = load_model(str(out), "encoder").model
    docs = {f"d{i}": f"document number {i} about {w}" for i, w in enumerate(["rivers", "cities", "music", "rain"] * 5)}
    queries = {f"q{i}": f"a question about {w}" for i, w in enumerate(["rivers", "music", "rain"])}
    qrels = {"q0": {"d0": 1, "d4": 1}, "q1": {"d2": 1}, "q2": {"d3": 1, "d7": 1, "d11": 1}}
    mine = ranking_metrics(rank_dense(model, Beir(docs, queries, qrels)), qrels)
    ev = InformationRetrievalEvaluator(queries, docs, {q: set(r) for q, r in qrels.items()}, ndcg_at_k=[10],
                                       mrr_at_k=[10], precision_recall_at_k=[100], accuracy_at_k=[1], map_at_k=[10],
                                       write_csv=False, name="t")
    theirs = ev(model)
    for k in ("ndcg@10", "mrr@10", "recall@100"):
        key = next(n for n in theirs if n.endswith(f"cosine_{k}"))
        assert mine[k] == pytest.approx(theirs[key], abs=1e-6), (k, mine, theirs)


def test_bad_folders_are_one_line(tmp_path, capsys):
    from eval_retrieval import main

    folder = write_beir(tmp_path / "beir", qrels=[("q9", "d1", 1)])
    assert main(["--bm25", "--data", folder]) == 2
    assert "qrels name query 'q9'" in capsys.readouterr().err
    os.remove(os.path.join(folder, "qrels", "test.tsv"))
    assert main(["--bm25", "--data", folder]) == 2
    assert "no qrels/test.tsv (BEIR layout" in capsys.readouterr().err


def _tiny_encoder(tmp_path, data):
    import torch

    from flexbert.convert.hf import to_hf
    from flexbert.convert.sentence import write_sentence_transformers
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig
    from test_train_fixtures import model_overrides

    torch.manual_seed(0)
    enc = tmp_path / "enc"
    to_hf(FlexBertForMaskedLM(FlexBertConfig.from_dict(model_overrides(attn_out_dropout=0.0))).eval(), enc,
          tokenizer=os.path.join(data, "tokenizer", "tokenizer.json"))
    write_sentence_transformers(str(enc), 64, 128, "mean")
    return enc


TOPICS = ["river", "city", "music", "rain", "stone", "forest", "bread", "ship"]


def test_retrieval_finetune_lowers_the_loss_and_writes_a_sentence_transformer(tmp_path, data, capsys):
    """sentence-transformers' trainer with MultipleNegativesRankingLoss on a pair file: the loss of
    the last steps is well below the first ones', the output loads, --eval scores before and after."""
    from sentence_transformers import SentenceTransformer

    from finetune_retrieval import main

    enc = _tiny_encoder(tmp_path, data)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"what about the {t} {i}", "positive": f"a text on the {t} number {i}"}) + "\n"
                             for i in range(4) for t in TOPICS))
    # decoys share the query's wording, the relevant passage only its topic: an untrained encoder
    # (mean of token vectors) prefers the decoys
    docs = dict({f"d{t}": f"a text on the {t} number 9" for t in TOPICS}, **{f"x{t}": f"what about the {t}s 9" for t in TOPICS})
    beir = write_beir(tmp_path / "beir", docs=docs,
                      queries={f"q{t}": f"what about the {t} 9" for t in TOPICS}, qrels=[(f"q{t}", f"d{t}", 1) for t in TOPICS])
    out = tmp_path / "retriever"
    assert main(["--model", str(enc), "--train", str(pairs), "--out", str(out), "--epochs", "4", "--batch-size", "8",
                 "--lr", "1e-3", "--warmup", "0", "--eval", beir, "--no-progress"]) == 0
    info = read_result(str(out))
    losses = info.details["losses"]
    assert info.task == "retrieval-finetune" and info.details["steps"] == len(losses) == 16 and info.details["kind"] == "pairs"
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses  # it learned to match queries to passages
    assert info.metric("test_mrr@10") > info.details["metrics_before"]["test"]["mrr@10"], info
    assert "ndcg@10 " in capsys.readouterr().out
    emb = SentenceTransformer(str(out)).encode(["what about the river 1"])
    assert emb.shape == (1, 64)


def test_retrieval_finetune_triplets_with_the_cached_loss(tmp_path, data, capsys):
    """A TSV of triplets and --mini-batch-size (CachedMultipleNegativesRankingLoss): the hard
    negative is used, the model trains and loads; a half-triplet file is one line."""
    from sentence_transformers import SentenceTransformer

    from finetune_retrieval import main

    enc = _tiny_encoder(tmp_path, data)
    rows = [(f"what about the {t}", f"a text on the {t}", f"a text on the {TOPICS[(k + 1) % 8]}") for k, t in enumerate(TOPICS)]
    tsv = tmp_path / "triplets.tsv"
    tsv.write_text("q\tpos\tneg\n" + "".join("\t".join(r) + "\n" for r in rows))
    out = tmp_path / "retriever"
    args = ["--model", str(enc), "--train", str(tsv), "--out", str(out), "--batch-size", "8", "--mini-batch-size", "3",
            "--query-column", "q", "--positive-column", "pos", "--negative-column", "neg", "--no-progress"]
    assert main(args) == 0
    info = read_result(str(out))
    assert info.details["kind"] == "triplets" and info.settings["mini_batch_size"] == 3 and info.details["steps"] == 1
    assert info.details["losses"][0] > 0 and SentenceTransformer(str(out)).encode(["x"]).shape == (1, 64)
    tsv.write_text("q\tpos\tneg\n" + "".join("\t".join(r) + "\n" for r in rows[:3]) + "a\tb\t\n")
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "triplets.tsv:5: no text in column 'neg'" in err, err


def test_random_init_gives_fresh_weights_of_the_same_shape_by_seed(tmp_path, data):
    """--random-init: every weight re-drawn (the transformer's own init), the same per seed."""
    import torch
    from transformers import set_seed

    from flexbert.eval.retrieval_finetune import reinitialize
    from flexbert.weights.load import load_model

    def load_encoder(path):
        return load_model(path, "encoder").model

    enc = str(_tiny_encoder(tmp_path, data))
    trained = load_encoder(enc)[0].auto_model.state_dict()
    fresh = []
    for _ in range(2):
        set_seed(5)
        model = load_encoder(enc)
        reinitialize(model)
        fresh.append(model[0].auto_model.state_dict())
    for k, v in trained.items():
        assert fresh[0][k].shape == v.shape
        torch.testing.assert_close(fresh[0][k], fresh[1][k], rtol=0, atol=0)
        if v.ndim == 2:  # matrices are random draws, never the loaded ones
            assert not torch.equal(fresh[0][k], v), k


def test_by_length_groups_queries_by_their_most_relevant_document(tmp_path, data, capsys):
    """--by-length: each query falls in the range of its most relevant document's token count (not
    its longest relevant one; a count equal to a bound opens the next range), and each range holds
    the mean of its queries' metrics, BM25's prefixed beside the model's."""
    from tokenizers import Tokenizer

    from eval_retrieval import main

    tok_dir = os.path.join(data, "tokenizer")
    docs = dict(DOCS, d4="cherry lemon " + "lemon " * 20)  # q2: d3 (grade 2) short, d4 (grade 1) long
    folder = write_beir(tmp_path / "beir", docs=docs)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    n = {d: len(tok.encode(t, add_special_tokens=False).ids) for d, t in docs.items()}
    assert n["d2"] < n["d3"] < n["d5"] < n["d4"]
    out = tmp_path / "out"
    assert main(["--bm25", "--data", folder, "--tokenizer", tok_dir, "--by-length", str(n["d3"]), str(n["d5"]),
                 "--out", str(out)]) == 0
    assert "relevant doc length" in capsys.readouterr().out
    result = read_result(str(out))
    rows = result.details["by_length"]
    assert [(r["range"], r["queries"]) for r in rows] == [
        (f"len-0-{n['d3'] - 1}", 1), (f"len-{n['d3']}-{n['d5'] - 1}", 1), (f"len-{n['d5']}-max", 1)]
    # q1: relevant at rank 2; q2: ideal ranking; q3: rank 1 (the ranking test above)
    assert rows[0]["ndcg@10"] == pytest.approx(1 / math.log2(3)) and rows[0]["mrr@10"] == 0.5
    assert rows[1]["ndcg@10"] == pytest.approx(1.0) and rows[2]["mrr@10"] == 1.0
    overall = sum(r["ndcg@10"] * r["queries"] for r in rows) / 3
    assert overall == pytest.approx(result.metric("test_ndcg@10"))
    # an empty range reports no metrics; BM25 beside a model is prefixed (the model's tokenizer counts)
    from flexbert.data.beir import load_beir
    from flexbert.eval.retrieval import by_length, rank_bm25

    beir = load_beir(folder)
    ranked = rank_bm25(beir)
    both = by_length({"": ranked, "bm25": ranked}, beir, {"q1": 1, "q2": 1, "q3": 1}, [5])
    assert both[1] == {"range": "len-5-max", "queries": 0, **{k: None for k in both[1] if k not in ("range", "queries")}}
    assert both[0]["bm25_ndcg@10"] == both[0]["ndcg@10"] and set(both[0]) >= {"bm25_mrr@10", "bm25_recall@100"}
    # nothing to count tokens with: one line
    assert main(["--bm25", "--data", folder, "--by-length"]) == 2
    assert "give --model or --tokenizer" in capsys.readouterr().err
