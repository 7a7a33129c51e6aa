#!/usr/bin/env python
"""Retrieval on a BEIR-layout folder: nDCG@10, MRR@10, Recall@100 of a dense encoder or BM25.

    python scripts/eval_retrieval.py --model runs/tiny/hf --data beir/scifact
    python scripts/eval_retrieval.py --bm25 --data beir/scifact            # the lexical baseline

--model is a SentenceTransformer folder: a FlexBERT export (scripts/export_hf.py writes the pooling
files), a retrieval fine-tune (scripts/finetune_retrieval.py) or any sentence-transformers model.
The layout and the metrics: flexbert/eval/retrieval.py and docs/evaluation.md.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from flexbert.config import at_least

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a SentenceTransformer folder (e.g. a FlexBERT export)")
    which.add_argument("--bm25", action="store_true", help="the BM25 baseline (bm25s)")
    p.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--max-seq-len", type=at_least(8), help="truncate inputs (default: the model's)")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    a = p.parse_args(argv)
    from flexbert.train.cli import _quiet_third_party

    _quiet_third_party()
    from flexbert.eval.retrieval import RetrievalError, load_beir, load_encoder, rank_bm25, rank_dense, ranking_metrics

    try:
        data = load_beir(a.data, a.split)
        ranked = rank_bm25(data) if a.bm25 else rank_dense(load_encoder(a.model, a.max_seq_len, a.device), data,
                                                           batch_size=a.batch_size)
    except (RetrievalError, OSError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    result = dict(ranking_metrics(ranked, data.qrels), model="bm25" if a.bm25 else a.model, data=a.data, split=a.split,
                  queries=len(data.qrels), documents=len(data.corpus))
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} on {a.data} ({a.split}: {result['queries']} queries, {result['documents']} documents): "
              f"nDCG@10 {result['ndcg@10']:.4f}, MRR@10 {result['mrr@10']:.4f}, Recall@100 {result['recall@100']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
