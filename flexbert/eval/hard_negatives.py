"""Hard negatives for the contrastive stage: for each (query, positive) pair, passages of the same
collection that a miner ranks high for the query but that are not its positive, written as the
``negative`` column ``flexbert finetune-retrieval`` reads (one row per negative: triplets).

Two miners:

* ``dense``: sentence-transformers' own ``mine_hard_negatives`` with ``--model`` (any
  ``--model`` flexbert takes; its stored query/passage prompts are used): cosine similarity over
  the collection of positives (deduplicated), the positives themselves never proposed;
* ``bm25``: the ``bm25s`` index (as ``flexbert eval-retrieval --bm25``) scores the same collection
  for each query; the same rules pick the negatives.

The rules, one meaning for both miners: skip the ``range_min`` best candidates (the likeliest
unlabelled positives), then refuse a candidate scoring within ``relative_margin`` of the query's
positive (a score above ``(1 - relative_margin) x`` the positive's: a probable false negative),
and, dense only, above the absolute ceiling ``max_score`` (cosine); take the best
``num_negatives`` left.  A pair for which no candidate passes gets no row (counted in the summary).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from flexbert.config import ConfigError
from flexbert.data.outputs import OutputError, check_output_dir
from flexbert.eval.pairs import read_pairs
from flexbert.eval.retrieval import RetrievalError, check_prompt, load_retriever


@dataclass
class MineConfig:
    pairs: str = ""  # a table of (query, positive) rows (any reader format)
    out: str = ""  # the triplets file written (.jsonl)
    miner: Literal["bm25", "dense"] = "bm25"
    model: Optional[str] = None  # the dense miner (run folder, checkpoint, model folder)
    num_negatives: int = 1  # negatives per pair (a row each)
    range_min: int = 0  # skip this many of the best candidates first
    relative_margin: Optional[float] = None  # refuse candidates within this fraction of the positive's score (0.05: NV-Retriever's)
    max_score: Optional[float] = None  # dense: refuse candidates above this cosine
    query_column: str = "query"
    positive_column: str = "positive"
    negative_column: str = "negative"
    query_prompt_name: Optional[str] = None  # dense: default the model's "query" prompt, when it has one
    passage_prompt_name: Optional[str] = None
    batch_size: int = 32
    max_seq_len: Optional[int] = None
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        for key in ("pairs", "out"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required")
        if self.miner == "dense" and not self.model:
            raise ConfigError("model: the dense miner needs --model")
        if self.miner == "bm25" and (self.model or self.max_score is not None):
            raise ConfigError("model / max_score: the BM25 miner takes neither (--miner dense does)")
        if self.num_negatives < 1 or self.range_min < 0:
            raise ConfigError("num_negatives must be >= 1 and range_min >= 0")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ConfigError(f"relative_margin: must be in [0, 1), got {self.relative_margin}")


def bm25_negatives(queries: list[str], positives: list[str], cfg: MineConfig) -> list[list[str]]:
    """For each pair, its negatives by BM25 over the deduplicated positives, by the module's rules."""
    import bm25s

    corpus = list(dict.fromkeys(positives))
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
    where = {p: i for i, p in enumerate(corpus)}
    own: dict[str, set[int]] = {}
    for q, p in zip(queries, positives):
        own.setdefault(q, set()).add(where[p])  # a query repeated with several positives: none is its negative
    found: dict[str, list[str]] = {}
    for q in own:
        tokens = bm25s.tokenize([q], show_progress=False, return_ids=False)[0]
        scores = np.asarray(index.get_scores(tokens), dtype=np.float64)
        ceiling = np.inf
        if cfg.relative_margin is not None:
            ceiling = (1 - cfg.relative_margin) * min(scores[i] for i in own[q])
        ranked = [i for i in np.argsort(-scores, kind="stable") if i not in own[q]][cfg.range_min:]
        found[q] = [corpus[i] for i in ranked if 0 < scores[i] <= ceiling][:cfg.num_negatives]
    return [found[q] for q in queries]


def dense_negatives(queries: list[str], positives: list[str], cfg: MineConfig) -> list[list[str]]:
    """For each pair, its negatives by sentence-transformers' ``mine_hard_negatives``."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    model = load_retriever(cfg.model, max_seq_len=cfg.max_seq_len).model
    for name in (cfg.query_prompt_name, cfg.passage_prompt_name):
        check_prompt(model, name, cfg.model)
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": queries, "positive": positives}), model, anchor_column_name="query",
        positive_column_name="positive", range_min=cfg.range_min, max_score=cfg.max_score,
        relative_margin=cfg.relative_margin, num_negatives=cfg.num_negatives, sampling_strategy="top",
        query_prompt_name=cfg.query_prompt_name, corpus_prompt_name=cfg.passage_prompt_name,
        output_format="triplet", batch_size=cfg.batch_size, verbose=False)
    found: dict[tuple[str, str], list[str]] = {}
    for row in mined:
        found.setdefault((row["query"], row["positive"]), []).append(row["negative"])
    return [found.get((q, p), []) for q, p in zip(queries, positives)]


MINERS = {"bm25": bm25_negatives, "dense": dense_negatives}


def mine_negatives(cfg: MineConfig) -> dict:
    """Write ``cfg.out`` (rows of query, positive, negative under the configured column names);
    a summary: pairs read, rows written, pairs left without a negative."""
    if os.path.exists(cfg.out) and not cfg.overwrite:
        raise OutputError(f"--out {cfg.out}: exists; pass --overwrite to replace it")
    check_output_dir(os.path.dirname(os.path.abspath(cfg.out)), [])
    if os.path.realpath(cfg.out) == os.path.realpath(cfg.pairs):
        raise OutputError(f"--out {cfg.out} is the input --pairs: write the triplets somewhere else")
    table = read_pairs(cfg.pairs, cfg.query_column, cfg.positive_column, cfg.negative_column)
    if "negative" in table:
        raise RetrievalError(f"{cfg.pairs}: already has a '{cfg.negative_column}' column (mine from pairs)")
    negatives = MINERS[cfg.miner](table["anchor"], table["positive"], cfg)
    rows = [{cfg.query_column: q, cfg.positive_column: p, cfg.negative_column: n}
            for q, p, ns in zip(table["anchor"], table["positive"], negatives) for n in ns]
    tmp = f"{cfg.out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, cfg.out)
    return {"pairs": len(table["anchor"]), "rows": len(rows), "without_negative": sum(not ns for ns in negatives),
            "miner": cfg.miner, "out": cfg.out}
