"""Retrieval evaluation on a BEIR-layout folder: a dense encoder (any SentenceTransformer folder, a
FlexBERT export included) or a BM25 baseline, scored with nDCG@10, MRR@10 and Recall@100.

The folder is read by flexbert/data/beir.py (the BEIR layout's owner).  The dense ranking is sentence-transformers' ``util.semantic_search`` (cosine, top k), BM25 is the
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
from typing import Optional

from flexbert.errors import FlexBertError
from flexbert.data.beir import Beir


class RetrievalError(FlexBertError, ValueError):
    """A BEIR folder or model that cannot be evaluated (one line)."""


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
    to a scratch folder by flexbert/weights/export.py, the one export path."""
    if not os.path.exists(path):
        raise RetrievalError(f"--model {path}: does not exist")
    from sentence_transformers import SentenceTransformer

    if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        model = SentenceTransformer(path, device=device)
    else:
        from flexbert.weights.export import export_to_hf

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
