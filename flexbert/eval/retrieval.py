"""Retrieval evaluation on a BEIR-layout folder: a dense encoder (any SentenceTransformer folder, a
FlexBERT export included) or a BM25 baseline, scored with nDCG@10, MRR@10 and Recall@100.

The folder is read by flexbert/data/beir.py (the BEIR layout's owner), the model by
flexbert/weights/load.py (``encoder`` head).  The dense ranking is sentence-transformers'
``util.semantic_search`` (cosine, top k), BM25 is the ``bm25s`` package (maintained, sparse-matrix BM25; English stopwords, lower-case); both rankings are
scored by one function, ``ranking_metrics``: nDCG with graded gains (rel / log2(rank + 1)), the
reciprocal rank of the first relevant document within 10, the share of relevant documents within
100.  ``tests/test_retrieval.py`` checks it against the formulas on a hand-made ranking and
against sentence-transformers' own InformationRetrievalEvaluator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from flexbert.config import ConfigError
from flexbert.data.beir import Beir, load_beir
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.errors import FlexBertError
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.weights.load import is_sparse_encoder, load_model


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


def check_prompt(model, name: Optional[str], ref: str) -> None:
    """Refuse (one line naming the model and the key) a prompt name the model does not store."""
    if name is not None and name not in model.prompts:
        raise RetrievalError(f"{ref}: no prompt {name!r} in its config_sentence_transformers.json "
                             f"(prompts: {', '.join(model.prompts) or 'none'}; finetune-retrieval --query-prompt stores them)")


def is_sparse(model) -> bool:
    """A sentence-transformers SparseEncoder (SPLADE over the MLM head) rather than a dense one."""
    return type(model).__name__ == "SparseEncoder"


def rank_model(model, data: Beir, k: int = 100, batch_size: int = 32, dim: Optional[int] = None,
               query_prompt_name: Optional[str] = None, passage_prompt_name: Optional[str] = None) -> dict[str, list[str]]:
    """Rank ``data``'s corpus for each query by ``model``: a SentenceTransformer by the cosine of its
    embeddings (cut to the first ``dim`` dimensions first: Matryoshka), a SparseEncoder by the dot
    product of its sparse vectors.  ``encode_query`` / ``encode_document`` apply the model's stored
    "query" and "passage" (or "document") prompts unless other prompt names are given."""
    from sentence_transformers import util

    sparse = is_sparse(model)
    kw: dict = {"batch_size": batch_size, "convert_to_tensor": True, "show_progress_bar": False}
    if not sparse:
        kw.update(normalize_embeddings=True, truncate_dim=dim)
    ids, qids = list(data.corpus), list(data.queries)
    docs = model.encode_document([data.corpus[i] for i in ids], prompt_name=passage_prompt_name, **kw)
    queries = model.encode_query([data.queries[q] for q in qids], prompt_name=query_prompt_name, **kw)
    hits = util.semantic_search(queries, docs, top_k=min(k, len(ids)),
                                score_function=model.similarity if sparse else util.cos_sim)
    return {q: [ids[h["corpus_id"]] for h in row] for q, row in zip(qids, hits)}


def rank_dense(model, data: Beir, k: int = 100, batch_size: int = 32) -> dict[str, list[str]]:
    """Rank by cosine similarity of ``model``'s embeddings (a SentenceTransformer)."""
    return rank_model(model, data, k, batch_size)


def score_model(model, data: Beir, dims: Optional[list[int]] = None, **kw) -> tuple[dict[str, float], list[dict]]:
    """(the metrics at the model's full width, one row ``{"dim": d, metrics...}`` per Matryoshka
    dimension in ``dims``, widest first)."""
    width = model.get_sentence_embedding_dimension()
    wide = [d for d in dims or [] if d > width or d < 1]
    if wide:
        raise RetrievalError(f"dims: {wide[0]} is not a width of this model's {width}-dimensional embeddings")
    full = ranking_metrics(rank_model(model, data, **kw), data.qrels)
    rows = [{"dim": d, **(full if d == width else ranking_metrics(rank_model(model, data, dim=d, **kw), data.qrels))}
            for d in sorted(set(dims or []), reverse=True)]
    return full, rows


# --------------------------------------------------------------------------- the evaluation
@dataclass
class RetrievalConfig:
    data: str = ""  # a BEIR folder (flexbert/data/beir.py)
    model: Optional[str] = None  # run folder, checkpoint, SentenceTransformer or SparseEncoder folder
    bm25: bool = False  # the BM25 baseline, beside the model or alone
    sparse: bool = False  # score the model's MLM head as a SPLADE SparseEncoder (automatic for a SparseEncoder folder)
    dims: Optional[list[int]] = None  # also score the embeddings cut to these widths (Matryoshka), one row each
    query_prompt_name: Optional[str] = None  # default: the model's "query" prompt, when it stores one
    passage_prompt_name: Optional[str] = None  # default: its "document" / "passage" / "corpus" prompt
    split: str = "test"
    skip_empty: bool = False  # leave blank queries and documents out (counted in details["warnings"]) instead of refusing
    max_seq_len: Optional[int] = None  # truncate inputs (default: the model's)
    batch_size: int = 32
    device: Optional[str] = None
    out: Optional[str] = None  # write OUT/result.json
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        if not self.data:
            raise ConfigError("data: required (a BEIR folder)")
        if not self.model and not self.bm25:
            raise ConfigError("give --model, --bm25, or both")
        if self.batch_size < 1 or (self.max_seq_len is not None and self.max_seq_len < 8):
            raise ConfigError("batch_size must be >= 1 and max_seq_len >= 8")
        if self.dims and self.sparse:
            raise ConfigError("dims: Matryoshka widths are for dense embeddings, not --sparse")


def load_retriever(ref: str, sparse: bool = False, **options):
    """``load_model`` with the head that scores ``ref``: ``sparse`` (SPLADE) when asked or when the
    folder is a SparseEncoder, else ``encoder``."""
    return load_model(ref, "sparse" if sparse or is_sparse_encoder(ref) else "encoder", **options)


@evaluation("retrieval", RetrievalConfig)
def evaluate_retrieval(cfg: RetrievalConfig) -> Result:
    """nDCG@10, MRR@10, Recall@100 of ``cfg.model`` (dense: cosine over its embeddings; sparse: the
    dot product of its SPLADE vectors) and/or BM25 on ``cfg.data``'s split; the model's metrics lead,
    BM25's go to ``details["bm25"]`` beside them, one row per ``cfg.dims`` width to ``details["dims"]``,
    what the folder's checks left out to ``details["warnings"]`` (flexbert/data/beir.py)."""
    if cfg.out:
        check_output_dir(cfg.out, [cfg.model, cfg.data])
    data = load_beir(cfg.data, cfg.split, cfg.skip_empty)
    details: dict = {"queries": len(data.qrels), "documents": len(data.corpus)}
    if data.warnings:  # judgements left out, records skipped: the result says what it covers
        details["warnings"] = list(data.warnings)
    model_ref = {"ref": "bm25", "kind": "bm25"}
    if cfg.model:
        loaded = load_retriever(cfg.model, cfg.sparse, max_seq_len=cfg.max_seq_len, device=cfg.device)
        for name in (cfg.query_prompt_name, cfg.passage_prompt_name):
            check_prompt(loaded.model, name, cfg.model)
        metrics, rows = score_model(loaded.model, data, cfg.dims, batch_size=cfg.batch_size,
                                    query_prompt_name=cfg.query_prompt_name, passage_prompt_name=cfg.passage_prompt_name)
        model_ref = loaded.ref(sparse=is_sparse(loaded.model))
        if rows:
            details["dims"] = rows
    if cfg.bm25:
        bm25 = ranking_metrics(rank_bm25(data), data.qrels)
        if cfg.model:
            details["bm25"] = bm25
        else:
            metrics = bm25
    if cfg.out:
        prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.data])
    return Result("retrieval", model_ref, settings_of(cfg), {cfg.split: metrics}, details)
