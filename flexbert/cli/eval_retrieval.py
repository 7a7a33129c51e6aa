"""Retrieval on a BEIR-layout folder: nDCG@10, MRR@10, Recall@100 of a dense encoder and/or BM25.

    flexbert eval-retrieval --model runs/tiny/hf --data beir/scifact --out runs/tiny/beir-scifact
    flexbert eval-retrieval --model runs/tiny --bm25 --data beir/scifact    # BM25 printed beside it
    flexbert eval-retrieval --bm25 --data beir/scifact                       # the lexical baseline only
    flexbert eval-retrieval --model runs/retriever --dims 128 64 32 --data beir/scifact   # one row per width
    flexbert eval-retrieval --model runs/splade --bm25 --data beir/scifact   # a SPLADE model beside BM25
    flexbert eval-retrieval --model runs/tiny/hf --data beir/scifact --by-length 256 1024   # by document length

--model is a run folder or checkpoint (exported first, mean pooling) or a SentenceTransformer folder:
a FlexBERT export (flexbert export writes the pooling files), a retrieval fine-tune
(flexbert finetune-retrieval) or any sentence-transformers model; a SparseEncoder folder (finetune-
retrieval --sparse) is scored as SPLADE (dot product of sparse vectors), and --sparse scores any
model's MLM head that way.  A model's stored "query" and "passage" prompts are applied.  --out writes
OUT/result.json (the metrics and the settings used).  --by-length adds the metrics per range of the
relevant document's length in tokens (the model's tokenizer, or --tokenizer).  The folder is checked
before anything is scored: repeated ids and blank texts are refused (--skip-empty leaves blank ones
out), judgements naming what the folder lacks are left out with a warning (printed and kept in
result.json), or refused when none is left.  The layout and the metrics: flexbert/eval/retrieval.py
and docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json

from flexbert.cli.common import command, make_parser, warn
from flexbert.config import at_least
from flexbert.eval.evaluation import run_evaluation

KEYS = ("ndcg@10", "mrr@10", "recall@100")


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert eval-retrieval")
    p.add_argument("--model", help="run folder, checkpoint, or SentenceTransformer folder (e.g. a FlexBERT export)")
    p.add_argument("--bm25", action="store_true", help="the BM25 baseline (bm25s), beside --model or alone")
    p.add_argument("--sparse", action="store_true", help="score --model's MLM head as SPLADE (automatic for a SparseEncoder)")
    p.add_argument("--dims", type=at_least(1), nargs="+", metavar="DIM",
                   help="also score the embeddings cut to these widths (Matryoshka), one row each")
    p.add_argument("--query-prompt-name", help="the model's prompt for queries (default: its 'query' prompt, if any)")
    p.add_argument("--passage-prompt-name", help="its prompt for passages (default: 'document' / 'passage', if any)")
    p.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--skip-empty", action="store_true",
                   help="leave blank queries and documents out (and say how many) instead of refusing the folder")
    p.add_argument("--out", help="write OUT/result.json (flexbert/eval/evaluation.py's schema)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars on stderr while encoding")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--max-seq-len", type=at_least(8), help="truncate inputs (default: the model's)")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--by-length", nargs="*", type=at_least(1), metavar="BOUND",
                   help="also the metrics per relevant-document length range, split at these token counts "
                        "(default 128 512 2048)")
    p.add_argument("--tokenizer", help="folder with tokenizer.json counting --by-length tokens (default: the model's)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def run(a: argparse.Namespace) -> int:
    # deferred: --help and refused flags answer before torch and the model libraries load
    from flexbert.eval.retrieval import format_by_length

    options = {k: v for k, v in vars(a).items() if k != "json" and v is not None}
    result = run_evaluation("retrieval", options)
    metrics, d = result.metrics[a.split], result.details
    warn(d)
    if a.json:  # the metrics at the top level, BM25's under "bm25" when both ran, and the settings
        print(json.dumps({**metrics, "model": result.model["ref"], "data": a.data, "split": a.split, **d}))
        return 0
    head = f"on {a.data} ({a.split}: {d['queries']} queries, {d['documents']} documents)"
    rows = [(result.model["ref"], metrics)] + ([("bm25", d["bm25"])] if "bm25" in d else [])
    for name, m in rows:
        print(f"{name} {head}: " + ", ".join(f"{k} {m[k]:.4f}" for k in KEYS))
    for row in d.get("dims", []):
        print(f"  dim {row['dim']:>5d}: " + ", ".join(f"{k} {row[k]:.4f}" for k in KEYS))
    if "by_length" in d:
        print(format_by_length(d["by_length"]))
    return 0


main = command(parser, run, also=(ValueError, OSError))
