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
    # recall@100 counts relevant documents past rank 10: q1 has 11 relevant ones (top 10 alone: 10/11), all
    # found; its 12th judgement names d9, which the corpus lacks: left out (said), not scored as a miss
    many = {f"x{i}": f"apple banana filler{i}" for i in range(11)}
    folder2 = write_beir(tmp_path / "beir2", docs=dict(DOCS, **many), qrels=[("q1", d, 1) for d in list(many) + ["d9"]])
    assert main(["--bm25", "--data", folder2, "--json"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert got["recall@100"] == 1.0 and got["queries"] == 1 and "corpus.jsonl lacks 1 document they name (d9)" in err
    # a second run into the same --out needs --overwrite
    assert main(["--bm25", "--data", folder, "--out", str(tmp_path / "out")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_graded_metrics_on_a_hand_made_ranking():
    """ranking_metrics against numbers worked out by hand: graded gains, the ideal DCG from every
    relevant document (retrieved or not), the reciprocal rank cut at exactly 10.

    qa: relevance a1=3, a2=1, a3=2 (a3 never retrieved); ranking x, a2, a1, ...
        DCG = 1/log2(3) + 3/log2(4) = 0.63093 + 1.5 = 2.13093
        ideal (gains 3, 2, 1) = 3 + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5 = 4.76186
        nDCG = 0.44750   (ideal from the retrieved list, gains 3, 1: 3.63093 -> 0.58688;
                          relevance read as binary: 1.13093 / 2.13093 = 0.53072)
        RR = 1/2, recall = 2/3
    qb: its one relevant document at rank 10: nDCG = 1/log2(11) = 0.28906, RR = 1/10, recall 1
    qc: its one relevant document at rank 11: nDCG 0, RR 0 (a cut at 11 gives 1/11), recall 1
    """
    from flexbert.eval.retrieval import ranking_metrics

    filler = [f"n{i}" for i in range(12)]
    ranked = {"qa": ["x", "a2", "a1", *filler], "qb": filler[:9] + ["b1"] + filler[9:], "qc": filler[:10] + ["c1"]}
    qrels = {"qa": {"a1": 3, "a2": 1, "a3": 2}, "qb": {"b1": 1}, "qc": {"c1": 1}}
    ndcg_a = (1 / math.log2(3) + 3 / math.log2(4)) / (3 + 2 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_a == pytest.approx(0.44750, abs=1e-5)
    got = ranking_metrics(ranked, qrels)
    assert got["ndcg@10"] == pytest.approx((ndcg_a + 1 / math.log2(11) + 0) / 3, abs=1e-12)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1 / 10 + 0) / 3, abs=1e-12)
    assert got["recall@100"] == pytest.approx((2 / 3 + 1 + 1) / 3, abs=1e-12)
    per_query = {q: ranking_metrics({q: ranked[q]}, {q: qrels[q]}) for q in qrels}
    assert per_query["qa"]["ndcg@10"] == pytest.approx(0.44750, abs=1e-5)
    assert per_query["qb"]["mrr@10"] == pytest.approx(0.1) and per_query["qc"]["mrr@10"] == 0.0


def test_eval_retrieval_out_follows_the_output_policy(tmp_path, capsys):
    """--out is refused inside --data and over a file, before anything is written; --overwrite
    replaces the folder whole (a stale file from an earlier output does not survive)."""
    from eval_retrieval import main

    folder = write_beir(tmp_path / "beir")
    inside = os.path.join(folder, "scores")
    assert main(["--bm25", "--data", folder, "--out", inside]) == 2
    assert "lies inside the input" in capsys.readouterr().err and not os.path.exists(inside)
    (tmp_path / "a-file").write_text("x")
    assert main(["--bm25", "--data", folder, "--out", str(tmp_path / "a-file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and (tmp_path / "a-file").read_text() == "x"
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier output")
    assert main(["--bm25", "--data", folder, "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and sorted(os.listdir(out)) == ["stale.txt"]
    assert main(["--bm25", "--data", folder, "--out", str(out), "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["result.json"]


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
    assert "none of its 1 judgement can be scored: queries.jsonl lacks 1 query they name (q9)" in capsys.readouterr().err
    os.remove(os.path.join(folder, "qrels", "test.tsv"))
    assert main(["--bm25", "--data", folder]) == 2
    assert "no qrels/test.tsv (BEIR layout" in capsys.readouterr().err


def test_judgements_the_folder_cannot_score_are_left_out_and_said(tmp_path, capsys):
    """Some qrels name a document the corpus lacks: they are left out of the scores (not counted as
    misses), and the warning is printed and kept in result.json; the all-missing, blank-query and
    duplicate-id folders are refused (tests/test_errors.py runs those through docs/errors.md)."""
    from eval_retrieval import main

    # q1's relevant d2 is found at rank 2; q2 and q3 name only documents the corpus lacks
    folder = write_beir(tmp_path / "beir", qrels=[("q1", "d2", 1), ("q2", "x3", 1), ("q3", "x5", 1), ("q3", "d5", 1)])
    assert main(["--bm25", "--data", folder, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    warning = (f"{folder}/qrels/test.tsv: 2 of 4 judgements left out of the scores: corpus.jsonl lacks 2 documents "
               "they name (x3, x5); the metrics cover the other 2")
    assert captured.err.splitlines() == [f"warning: {warning}"]
    saved = read_result(str(tmp_path / "out"))
    assert saved.details["warnings"] == [warning] and saved.details["queries"] == 2
    assert saved.metrics["test"]["recall@100"] == 1.0  # q2 (nothing left to find) is not scored as a miss
    assert saved.metrics["test"]["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)


def test_skip_empty_leaves_blank_records_out_and_counts_them(tmp_path, capsys):
    from eval_retrieval import main

    folder = write_beir(tmp_path / "beir", docs=dict(DOCS, d7="  "), queries=dict(QUERIES, q4=""),
                        qrels=QRELS + [("q4", "d1", 1), ("q3", "d7", 1)])
    assert main(["--bm25", "--data", folder]) == 2
    assert capsys.readouterr().err.startswith(f"error: {folder}/queries.jsonl:4: query 'q4' has no text;")
    assert main(["--bm25", "--data", folder, "--skip-empty", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: {folder}: left out 1 blank query and 1 blank document (--skip-empty)",
        f"warning: {folder}/qrels/test.tsv: 2 of 6 judgements left out of the scores: 2 name a blank record "
        "(--skip-empty); the metrics cover the other 4"]
    got = json.loads(out)
    assert got["queries"] == 3 and got["documents"] == 6 and got["recall@100"] == 1.0


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
                             for i in range(4) for t in TOPICS) + json.dumps({"query": "a query", "positive": " "}) + "\n")
    # decoys share the query's wording, the relevant passage only its topic: an untrained encoder
    # (mean of token vectors) prefers the decoys
    docs = dict({f"d{t}": f"a text on the {t} number 9" for t in TOPICS}, **{f"x{t}": f"what about the {t}s 9" for t in TOPICS})
    beir = write_beir(tmp_path / "beir", docs=docs,
                      queries={f"q{t}": f"what about the {t} 9" for t in TOPICS}, qrels=[(f"q{t}", f"d{t}", 1) for t in TOPICS])
    out = tmp_path / "retriever"
    assert main(["--model", str(enc), "--train", str(pairs), "--out", str(out), "--epochs", "4", "--batch-size", "8",
                 "--lr", "1e-3", "--warmup", "0", "--eval", beir, "--no-progress", "--skip-empty"]) == 0
    info = read_result(str(out))
    assert info.details["warnings"] == [f"{pairs}: left out 1 row(s) with a blank text (--skip-empty)"]
    losses = info.details["losses"]
    assert info.task == "retrieval-finetune" and info.details["steps"] == len(losses) == 16 and info.details["kind"] == "pairs"
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses  # it learned to match queries to passages
    assert info.metric("test_mrr@10") > info.details["metrics_before"]["test"]["mrr@10"], info
    assert "ndcg@10 " in capsys.readouterr().out
    emb = SentenceTransformer(str(out)).encode(["what about the river 1"])
    assert emb.shape == (1, 64)


def test_retrieval_finetune_triplets_with_the_cached_loss(tmp_path, data, capsys):
    """A TSV of triplets and --mini-batch-size (CachedMultipleNegativesRankingLoss): the first
    step's loss is the one computed here from the untrained encoder with the hard negatives among
    the candidates (cross-entropy of 20 x cosine against 8 positives + 8 negatives), not the one
    without them; the model trains and loads; a half-triplet file is one line."""
    import torch
    from sentence_transformers import SentenceTransformer

    from finetune_retrieval import main
    from flexbert.weights.load import load_model

    enc = _tiny_encoder(tmp_path, data)
    rows = [(f"what about the {t}", f"a text on the {t}", f"a note about {TOPICS[(k + 1) % 8]} boats") for k, t in enumerate(TOPICS)]
    tsv = tmp_path / "triplets.tsv"
    tsv.write_text("q\tpos\tneg\n" + "".join("\t".join(r) + "\n" for r in rows))
    # the loss of step 1, by hand (no dropout in the encoder: training and encoding agree)
    start = load_model(str(enc), "encoder").model
    q, p, n = (start.encode([r[i] for r in rows], convert_to_tensor=True, normalize_embeddings=True) for i in range(3))
    target = torch.arange(len(rows))
    with_negatives = float(torch.nn.functional.cross_entropy(20 * q @ torch.cat([p, n]).T, target))
    without = float(torch.nn.functional.cross_entropy(20 * q @ p.T, target))
    assert abs(with_negatives - without) > 0.05, (with_negatives, without)  # the check can tell them apart
    out = tmp_path / "retriever"
    args = ["--model", str(enc), "--train", str(tsv), "--out", str(out), "--batch-size", "8", "--mini-batch-size", "3",
            "--query-column", "q", "--positive-column", "pos", "--negative-column", "neg", "--no-progress"]
    assert main(args) == 0
    info = read_result(str(out))
    assert info.details["kind"] == "triplets" and info.settings["mini_batch_size"] == 3 and info.details["steps"] == 1
    assert info.details["losses"][0] == pytest.approx(with_negatives, abs=2e-3), (info.details["losses"], with_negatives, without)
    assert SentenceTransformer(str(out)).encode(["x"]).shape == (1, 64)
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


def test_pairs_the_sampler_can_only_batch_alone_are_refused_with_the_count(tmp_path):
    """The no-duplicates sampler takes no text twice in a batch: pairs sharing one positive come one
    per batch (no in-batch negative, a loss of exactly 0) and are refused before training; a last
    batch of one that only the row count leaves is not; with a negative column every batch has one."""
    from flexbert.eval.pairs import RetrievalTrainingError, check_batches, read_pairs

    shared = {"anchor": [f"q{i}" for i in range(12)], "positive": ["p"] * 12}
    with pytest.raises(RetrievalTrainingError, match="12 of 12 batches would hold a single pair"):
        check_batches(shared, 4, 0, "pairs.jsonl")
    half = {"anchor": [f"q{i}" for i in range(12)], "positive": ["p", "r"] * 6}  # two distinct positives: batches of 2
    assert check_batches(half, 4, 0, "pairs.jsonl") == [2] * 6
    assert check_batches({"anchor": list("abcdefghi"), "positive": list("ABCDEFGHI")}, 4, 0, "p") == [4, 4, 1]
    assert check_batches(dict(shared, negative=[f"n{i}" for i in range(12)]), 4, 0, "p") == [1] * 12
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tpositive\n\tx\nc\td\ne\tf\n")
    skipped: list = []
    assert read_pairs(str(path), skip_empty=True, skipped=skipped) == {"anchor": ["c", "e"], "positive": ["d", "f"]}
    assert skipped == [2]


def test_a_loss_that_stays_zero_stops_the_trainer_and_is_refused():
    """sentence-transformers' trainer calls ``on_log`` with each step's loss (logging_steps=1)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from flexbert.eval.retrieval_finetune import ZERO_LOSS_STEPS, RetrievalTrainingError, ZeroLossStop

    args, state = TrainingArguments(output_dir="unused", report_to="none"), TrainerState()
    stop, control = ZeroLossStop(), TrainerControl()
    for step in range(ZERO_LOSS_STEPS):
        assert not control.should_training_stop
        stop.on_log(args, state, control, logs={"loss": 0.0, "learning_rate": 1e-5})
    assert control.should_training_stop
    with pytest.raises(RetrievalTrainingError, match=f"exactly 0 for the first {ZERO_LOSS_STEPS} step"):
        stop.check([0.0] * ZERO_LOSS_STEPS)
    learning, control = ZeroLossStop(), TrainerControl()
    for loss in (0.0, 0.5, 0.0, 0.0, 0.0, 0.0):
        learning.on_log(args, state, control, logs={"loss": loss})
    assert not control.should_training_stop
    learning.check([0.0, 0.5, 0.0, 0.0, 0.0, 0.0])  # it moved: not refused
    with pytest.raises(RetrievalTrainingError):
        ZeroLossStop().check([0.0, 0.0])  # a run shorter than the window, all 0


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
