"""Retrieval on a BEIR-layout folder: nDCG@10, MRR@10, Recall@100 of a dense encoder and/or BM25.

    flexbert eval-retrieval --model runs/tiny/hf --data beir/scifact --out runs/tiny/beir-scifact
    flexbert eval-retrieval --model runs/tiny --bm25 --data beir/scifact    # BM25 printed beside it
    flexbert eval-retrieval --bm25 --data beir/scifact                       # the lexical baseline only

--model is a run folder or checkpoint (exported first, mean pooling) or a SentenceTransformer folder:
a FlexBERT export (flexbert export writes the pooling files), a retrieval fine-tune
(flexbert finetune-retrieval) or any sentence-transformers model.  --out writes OUT/metrics.json
(the metrics and the settings used).  The layout and the metrics: flexbert/eval/retrieval.py and
docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.beir import load_beir
from flexbert.eval.retrieval import load_encoder, rank_bm25, rank_dense, ranking_metrics

KEYS = ("ndcg@10", "mrr@10", "recall@100")


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert eval-retrieval")
    p.add_argument("--model", help="run folder, checkpoint, or SentenceTransformer folder (e.g. a FlexBERT export)")
    p.add_argument("--bm25", action="store_true", help="the BM25 baseline (bm25s), beside --model or alone")
    p.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="write OUT/metrics.json")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--max-seq-len", type=at_least(8), help="truncate inputs (default: the model's)")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def evaluate(a) -> dict:
    """The metrics.json record: the first of --model / --bm25 at the top level, BM25 under "bm25"
    when both ran, and the settings."""
    data = load_beir(a.data, a.split)
    scores = {}
    if a.model:
        scores[a.model] = ranking_metrics(rank_dense(load_encoder(a.model, a.max_seq_len, a.device), data,
                                                     batch_size=a.batch_size), data.qrels)
    if a.bm25:
        scores["bm25"] = ranking_metrics(rank_bm25(data), data.qrels)
    first = next(iter(scores))
    result = dict(scores[first], model=first, data=a.data, split=a.split, queries=len(data.qrels),
                  documents=len(data.corpus), max_seq_len=a.max_seq_len, scoring="bm25" if first == "bm25" else "cosine")
    if a.model and a.bm25:
        result["bm25"] = scores["bm25"]
    return result


def run(a: argparse.Namespace) -> int:
    if not a.model and not a.bm25:
        parser().error("give --model, --bm25, or both")
    if a.out:
        check_output_dir(a.out, [a.model, a.data])
    result = evaluate(a)
    if a.out:
        out = prepare_output_dir(a.out, overwrite=a.overwrite, inputs=[a.model, a.data])
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if a.json:
        print(json.dumps(result))
        return 0
    head = f"on {a.data} ({a.split}: {result['queries']} queries, {result['documents']} documents)"
    rows = [(result["model"], result)] + ([("bm25", result["bm25"])] if "bm25" in result else [])
    for name, m in rows:
        print(f"{name} {head}: " + ", ".join(f"{k} {m[k]:.4f}" for k in KEYS))
    return 0


main = command(parser, run, also=(ValueError, OSError))
