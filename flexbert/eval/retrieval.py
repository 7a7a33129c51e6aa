"""Retrieval evaluation on a BEIR-layout folder: a dense encoder (any SentenceTransformer folder, a
FlexBERT export included) or a BM25 baseline, scored with nDCG@10, MRR@10 and Recall@100.

BEIR layout (the format of the BEIR benchmark's data sets)::

    FOLDER/corpus.jsonl      {"_id": "d1", "title": "...", "text": "..."} per line
    FOLDER/queries.jsonl     {"_id": "q1", "text": "..."} per line
    FOLDER/qrels/test.tsv    query-id <TAB> corpus-id <TAB> score, with a header row

Files are read through the reader registry (flexbert/data/readers.py: errors name file and line).
The dense ranking is sentence-transformers' ``util.semantic_search`` (cosine, top k), BM25 is the
``bm25s`` package (maintained, sparse-matrix BM25; English stopwords, lower-case); both rankings are
scored by one function, ``ranking_metrics``: nDCG with graded gains (rel / log2(rank + 1)), the
reciprocal rank of the first relevant document within 10, the share of relevant documents within
100.  ``tests/test_retrieval.py`` checks it against the formulas on a hand-made ranking and
against sentence-transformers' own InformationRetrievalEvaluator.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

from flexbert.data.readers import InputError, read_records


class RetrievalError(ValueError):
    """A BEIR folder or model that cannot be evaluated (one line)."""


@dataclass
class Beir:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text (only queries with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance > 0}


def _need(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise RetrievalError(f"{folder}: no {name} (BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    return path


def load_beir(folder: str, split: str = "test") -> Beir:
    try:
        corpus = {str(r.value["_id"]): " ".join(x for x in (r.value.get("title"), r.value.get("text")) if x)
                  for r in read_records(_need(folder, "corpus.jsonl"))}
        queries = {str(r.value["_id"]): str(r.value["text"]) for r in read_records(_need(folder, "queries.jsonl"))}
        qrels: dict[str, dict[str, int]] = {}
        for r in read_records(_need(folder, os.path.join("qrels", f"{split}.tsv"))):
            qid, did, score = str(r.value["query-id"]), str(r.value["corpus-id"]), int(r.value["score"])
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    except KeyError as e:
        raise RetrievalError(f"{folder}: a record without the field {e} (BEIR: _id, text; query-id, corpus-id, score)") from None
    except InputError as e:
        raise RetrievalError(str(e)) from None
    missing = sorted(q for q in qrels if q not in queries)
    if missing:
        raise RetrievalError(f"{folder}: qrels name query {missing[0]!r}, which queries.jsonl does not have")
    return Beir(corpus, {q: queries[q] for q in qrels}, qrels)


def write_beir(folder: str, corpus: dict[str, str], queries: dict[str, str],
               qrels: dict[str, dict[str, dict[str, int]]]) -> None:
    """Write the BEIR layout ``load_beir`` reads: ``qrels`` maps a split name to its judgements."""
    import json

    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) + "\n" for d, t in corpus.items())
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())
    for split, judged in qrels.items():
        with open(os.path.join(folder, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t{s}\n" for q, rel in judged.items() for d, s in rel.items())


def ranking_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the judged queries (a query without a ranking scores 0)."""
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    for qid, rel in qrels.items():
        docs = ranked.get(qid, [])
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(docs[:10]))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
        totals["ndcg@10"] += dcg / ideal if ideal else 0.0
        first = next((i for i, d in enumerate(docs[:10]) if d in rel), None)
        totals["mrr@10"] += 1.0 / (first + 1) if first is not None else 0.0
        totals["recall@100"] += len(set(docs[:100]) & set(rel)) / len(rel)
    n = max(1, len(qrels))
    return {k: v / n for k, v in totals.items()}


def rank_bm25(data: Beir, k: int = 100) -> dict[str, list[str]]:
    try:
        import bm25s
    except ImportError:
        raise RetrievalError("the BM25 baseline needs bm25s (pip install 'flexbert[retrieval]')") from None
    ids = list(data.corpus)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([data.corpus[i] for i in ids], show_progress=False), show_progress=False)
    qids = list(data.queries)
    tokens = bm25s.tokenize([data.queries[q] for q in qids], show_progress=False)
    docs, _ = index.retrieve(tokens, k=min(k, len(ids)), show_progress=False)
    return {q: [ids[j] for j in row] for q, row in zip(qids, docs)}


def rank_dense(model, data: Beir, k: int = 100, batch_size: int = 32) -> dict[str, list[str]]:
    """Rank by cosine similarity of ``model``'s embeddings (a SentenceTransformer)."""
    from sentence_transformers import util

    ids, qids = list(data.corpus), list(data.queries)
    docs = model.encode([data.corpus[i] for i in ids], batch_size=batch_size, convert_to_tensor=True,
                        normalize_embeddings=True, show_progress_bar=False)
    queries = model.encode([data.queries[q] for q in qids], batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
    hits = util.semantic_search(queries, docs, top_k=min(k, len(ids)))
    return {q: [ids[h["corpus_id"]] for h in row] for q, row in zip(qids, hits)}


def load_encoder(path: str, max_seq_len: Optional[int] = None, device: Optional[str] = None):
    """A SentenceTransformer from a Hugging Face / sentence-transformers folder (a FlexBERT export
    carries its pooling files), or from a run folder or checkpoint, exported first (mean pooling)
    to a scratch folder by flexbert/train/export.py, the one export path."""
    if not os.path.exists(path):
        raise RetrievalError(f"--model {path}: does not exist")
    from sentence_transformers import SentenceTransformer

    if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        model = SentenceTransformer(path, device=device)
    else:
        from flexbert.train.export import export_to_hf

        with tempfile.TemporaryDirectory() as scratch:
            folder = os.path.join(scratch, "hf")
            try:
                export_to_hf(folder, run_dir=path if os.path.isdir(path) else None,
                             checkpoint=None if os.path.isdir(path) else path)
            except (RuntimeError, ValueError, OSError) as e:
                raise RetrievalError(f"--model {path}: {str(e).splitlines()[0]}") from None
            model = SentenceTransformer(folder, device=device)
    if max_seq_len:
        model.max_seq_length = max_seq_len
    return model
