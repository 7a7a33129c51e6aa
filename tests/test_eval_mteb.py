"""flexbert eval-mteb (flexbert/eval/mteb_eval.py, scripts/eval_mteb.py): a local BEIR folder runs as
an mteb task through mteb.evaluate and scores what flexbert eval-retrieval scores on it; an unknown
task name, a folder without qrels and an unreachable Hub are one line."""

import os
import sys
from types import SimpleNamespace

import pytest

from flexbert.eval.evaluation import read_result

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

from test_retrieval import DOCS, QRELS, QUERIES, TOPICS, _tiny_encoder, write_beir  # noqa: E402


def _folder(tmp_path):
    """Graded judgements, two relevant documents for one query, and decoys that share the queries'
    wording: the random encoder's ranking is neither ideal nor empty."""
    docs = dict(DOCS, **{f"d{t}": f"a text on the {t} number 9" for t in TOPICS},
                **{f"x{t}": f"what about the {t}s 9" for t in TOPICS})
    queries = dict(QUERIES, **{f"q{t}": f"what about the {t} 9" for t in TOPICS})
    # qriver: its near-copy decoy xriver is relevant too, less than driver: graded gains count
    qrels = QRELS + [(f"q{t}", f"d{t}", 2 if t == "river" else 1) for t in TOPICS] + [("qriver", "xriver", 1)]
    return write_beir(tmp_path / "beir", docs=docs, queries=queries, qrels=qrels)


def test_local_folder_through_mteb_equals_eval_retrieval(tmp_path, data, capsys):
    from eval_mteb import main as eval_mteb
    from eval_retrieval import main as eval_retrieval

    enc = str(_tiny_encoder(tmp_path, data))
    folder = _folder(tmp_path)
    assert eval_mteb(["--model", enc, "--data", folder, "--out", str(tmp_path / "mteb")]) == 0
    assert "on local:beir (test): main_score " in capsys.readouterr().out
    assert eval_retrieval(["--model", enc, "--data", folder, "--out", str(tmp_path / "retrieval")]) == 0
    theirs, ours = read_result(str(tmp_path / "mteb")), read_result(str(tmp_path / "retrieval"))
    assert theirs.task == "mteb" and theirs.details["tasks"] == ["local:beir"] and theirs.model["ref"] == enc
    assert 0.05 < ours.metric("test_ndcg@10") < 0.95, ours.metrics  # a ranking with something to get wrong
    for k in ("ndcg@10", "mrr@10", "recall@100"):
        assert theirs.metric(f"test_local:beir/{k}") == pytest.approx(ours.metric(f"test_{k}"), abs=1e-3), k
    assert theirs.metric("test_local:beir/main_score") == theirs.metric("test_local:beir/ndcg@10")
    assert theirs.details["mteb"]["local:beir"]["test"][0]["ndcg_at_1"] >= 0  # mteb's whole table is kept


def test_bad_input_is_one_line(tmp_path, capsys):
    from eval_mteb import main

    from flexbert.eval.mteb_eval import MtebError, fetch

    folder = write_beir(tmp_path / "beir")
    os.remove(os.path.join(folder, "qrels", "test.tsv"))
    out = tmp_path / "out"
    assert main(["--model", str(tmp_path / "model"), "--data", folder, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no qrels/test.tsv (BEIR layout" in err and err.count("\n") == 1 and not out.exists(), err
    assert main(["--model", str(tmp_path / "model"), "--tasks", "SciFactt", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown MTEB task" in err and "'SciFact'" in err and err.count("\n") == 1 and not out.exists(), err
    assert main(["--model", str(tmp_path / "model")]) == 2
    assert "give --tasks NAME ..., --data BEIR_FOLDER, or both" in capsys.readouterr().err

    def unreachable():  # what datasets raises for a Hub it cannot reach (no network here)
        raise ConnectionError("Couldn't reach 'mteb/scifact' on the Hub (LocalEntryNotFoundError)")

    with pytest.raises(MtebError, match=r"MTEB task SciFact: its data could not be fetched \(Couldn't reach"):
        fetch(SimpleNamespace(metadata=SimpleNamespace(name="SciFact"), load_data=unreachable))
