"""Retrieval evaluation on a BEIR-layout folder: a dense encoder (any SentenceTransformer folder, a
FlexBERT export included) or a BM25 baseline, scored with nDCG@10, MRR@10 and Recall@100.

The folder is read by flexbert/data/beir.py (the BEIR layout's owner), the model by
flexbert/weights/load.py (``encoder`` head).  The dense ranking is sentence-transformers'
``util.semantic_search`` (cosine, top k), BM25 is the ``bm25s`` package (maintained, sparse-matrix BM25; English stopwords, lower-case); both rankings are
scored by one function, ``ranking_metrics``: nDCG with graded gains (rel / log2(rank + 1)), the
reciprocal rank of the first relevant document within 10, the share of relevant documents within
100.  ``tests/test_retrieval.py`` checks it against the formulas on a hand-made ranking and
against sentence-transformers' own InformationRetrievalEvaluator.

``by_length`` (``--by-length``) also reports the metrics per range of the relevant document's
length in tokens (the query's most relevant document, counted with the model's tokenizer or
``--tokenizer``, untruncated), in ``details["by_length"]``: does a model lose long documents?
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Optional

from flexbert.config import ConfigError
from flexbert.data.beir import Beir, load_beir
from flexbert.data.length_buckets import DEFAULT_LENGTH_BOUNDS, bucket_names
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.tokenizer import load_tokenizer
from flexbert.errors import FlexBertError
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.weights.load import is_sparse_encoder, load_model


class RetrievalError(FlexBertError, ValueError):
    """A BEIR folder or model that cannot be evaluated (one line)."""


METRICS = ("ndcg@10", "mrr@10", "recall@100")


def query_metrics(docs: list[str], rel: dict[str, int]) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 of one query's ranking ``docs`` against its judgements ``rel``."""
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(docs[:10]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
    first = next((i for i, d in enumerate(docs[:10]) if d in rel), None)
    return {"ndcg@10": dcg / ideal if ideal else 0.0, "mrr@10": 1.0 / (first + 1) if first is not None else 0.0,
            "recall@100": len(set(docs[:100]) & set(rel)) / len(rel)}


def mean_metrics(per_query: list[dict[str, float]]) -> dict[str, float]:
    n = max(1, len(per_query))
    return {k: sum(q[k] for q in per_query) / n for k in METRICS}


def ranking_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the judged queries (a query without a ranking scores 0)."""
    return mean_metrics([query_metrics(ranked.get(qid, []), rel) for qid, rel in qrels.items()])


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
               query_prompt_name: Optional[str] = None, passage_prompt_name: Optional[str] = None,
               progress: bool = False) -> dict[str, list[str]]:
    """Rank ``data``'s corpus for each query by ``model``: a SentenceTransformer by the cosine of its
    embeddings (cut to the first ``dim`` dimensions first: Matryoshka), a SparseEncoder by the dot
    product of its sparse vectors.  ``encode_query`` / ``encode_document`` apply the model's stored
    "query" and "passage" (or "document") prompts unless other prompt names are given."""
    from sentence_transformers import util

    sparse = is_sparse(model)
    kw: dict = {"batch_size": batch_size, "convert_to_tensor": True, "show_progress_bar": progress}  # bars on stderr
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


def score_model(model, data: Beir, dims: Optional[list[int]] = None, ranked: Optional[dict[str, list[str]]] = None,
                **kw) -> tuple[dict[str, float], list[dict]]:
    """(the metrics at the model's full width, one row ``{"dim": d, metrics...}`` per Matryoshka
    dimension in ``dims``, widest first); ``ranked``: the full-width ranking when already made."""
    width = model.get_sentence_embedding_dimension()
    wide = [d for d in dims or [] if d > width or d < 1]
    if wide:
        raise RetrievalError(f"dims: {wide[0]} is not a width of this model's {width}-dimensional embeddings")
    full = ranking_metrics(ranked if ranked is not None else rank_model(model, data, **kw), data.qrels)
    rows = [{"dim": d, **(full if d == width else ranking_metrics(rank_model(model, data, dim=d, **kw), data.qrels))}
            for d in sorted(set(dims or []), reverse=True)]
    return full, rows


# --------------------------------------------------------------------------- by document length
def token_counter(tokenizer: Optional[str], model=None) -> Callable[[list[str]], list[int]]:
    """Token counts of texts (no special tokens, no truncation): ``tokenizer``'s (a folder with
    tokenizer.json), else the dense model's own tokenizer."""
    if tokenizer:
        tok = load_tokenizer(tokenizer)
        return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    if model is None:
        raise ConfigError("by_length counts tokens: give --model or --tokenizer")
    return lambda texts: [len(x) for x in model.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def query_lengths(data: Beir, count: Callable[[list[str]], list[int]]) -> dict[str, int]:
    """Each judged query's length: the token count of its most relevant document (the longest of
    equally relevant ones; a judged document missing from the corpus counts 0)."""
    ids = sorted({d for rel in data.qrels.values() for d in rel if d in data.corpus})
    tokens = dict(zip(ids, count([data.corpus[d] for d in ids])))
    return {q: max((g, tokens.get(d, 0)) for d, g in rel.items())[1] for q, rel in data.qrels.items()}


def by_length(rankings: dict[str, dict[str, list[str]]], data: Beir, lengths: dict[str, int],
              bounds: list[int]) -> list[dict]:
    """Per range of the relevant document's length (``len-LO-HI`` in tokens, split at ``bounds``):
    the number of queries and, for each ranking (``{"": dense, "bm25": ...}``), its mean metrics
    over them (None for an empty range); the first ranking's keys are bare, the others prefixed."""
    names = bucket_names(bounds)
    groups: list[list[str]] = [[] for _ in names]
    for q in data.qrels:
        groups[bisect.bisect_right(bounds, lengths[q])].append(q)
    rows = []
    for name, qids in zip(names, groups):
        row: dict = {"range": name, "queries": len(qids)}
        for ranker, ranked in rankings.items():
            m = mean_metrics([query_metrics(ranked.get(q, []), data.qrels[q]) for q in qids])
            row.update({f"{ranker}{'_' if ranker else ''}{k}": (v if qids else None) for k, v in m.items()})
        rows.append(row)
    return rows


def format_by_length(rows: list[dict]) -> str:
    """The per-length table as text (one line per range)."""
    keys = [k for k in rows[0] if k not in ("range", "queries")]
    lines = [f"  {'relevant doc length':<20} {'queries':>8} " + " ".join(f"{k:>16}" for k in keys)]
    for r in rows:
        cells = " ".join(f"{r[k]:>16.4f}" if r[k] is not None else f"{'-':>16}" for k in keys)
        lines.append(f"  {r['range']:<20} {r['queries']:>8,} {cells}")
    return "\n".join(lines)


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
    by_length: Optional[list[int]] = None  # [] = DEFAULT_LENGTH_BOUNDS; metrics by relevant-document length (tokens)
    tokenizer: Optional[str] = None  # counts the tokens for by_length (default: the model's)
    out: Optional[str] = None  # write OUT/result.json
    overwrite: bool = False
    progress: bool = False  # bars on stderr while the corpus and the queries are encoded

    def validate(self, prefix: str = "") -> None:
        if not self.data:
            raise ConfigError("data: required (a BEIR folder)")
        if not self.model and not self.bm25:
            raise ConfigError("give --model, --bm25, or both")
        if self.by_length is not None and not self.model and not self.tokenizer:
            raise ConfigError("by_length counts tokens: give --model or --tokenizer")
        if self.by_length and any(b < 1 for b in self.by_length):
            raise ConfigError(f"by_length: token counts >= 1, got {self.by_length}")
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
    model_ref, model, rankings = {"ref": "bm25", "kind": "bm25"}, None, {}
    if cfg.model:
        loaded = load_retriever(cfg.model, cfg.sparse, max_seq_len=cfg.max_seq_len, device=cfg.device)
        for name in (cfg.query_prompt_name, cfg.passage_prompt_name):
            check_prompt(loaded.model, name, cfg.model)
        model, model_ref = loaded.model, loaded.ref(sparse=is_sparse(loaded.model))
        kw = dict(batch_size=cfg.batch_size, query_prompt_name=cfg.query_prompt_name,
                  passage_prompt_name=cfg.passage_prompt_name)
        rankings[""] = rank_model(model, data, progress=cfg.progress, **kw)
        if cfg.dims:
            details["dims"] = score_model(model, data, cfg.dims, ranked=rankings[""], **kw)[1]
    if cfg.bm25:
        rankings["bm25" if cfg.model else ""] = rank_bm25(data)
    metrics = ranking_metrics(rankings[""], data.qrels)
    if "bm25" in rankings:
        details["bm25"] = ranking_metrics(rankings["bm25"], data.qrels)
    if cfg.by_length is not None:
        bounds = sorted(set(cfg.by_length)) or list(DEFAULT_LENGTH_BOUNDS)
        lengths = query_lengths(data, token_counter(cfg.tokenizer, model))
        details["by_length"] = by_length(rankings, data, lengths, bounds)
    if cfg.out:
        prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.data])
    return Result("retrieval", model_ref, settings_of(cfg), {cfg.split: metrics}, details)
