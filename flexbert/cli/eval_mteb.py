"""MTEB through mteb 2.x's own API: named MTEB tasks (data from the Hub) or a local BEIR folder.

    flexbert eval-mteb --model runs/tiny/hf --tasks SciFact NFCorpus --out runs/tiny/mteb
    flexbert eval-mteb --model runs/tiny --data beir/scifact --split test      # offline: a local folder

--model is a run folder or checkpoint (exported first, mean pooling) or a SentenceTransformer
folder, as for eval-retrieval.  --tasks names MTEB tasks (mteb.get_tasks; their data loads from
the Hugging Face Hub, so they need a network); --data runs a folder in the BEIR layout as an mteb
retrieval task through the same mteb.evaluate call, and scores what eval-retrieval scores on it.
--out writes OUT/result.json (flexbert/eval/evaluation.py's schema; mteb's whole score table under
details.mteb).  More: flexbert/eval/mteb_eval.py and docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.eval.evaluation import run_evaluation


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert eval-mteb")
    p.add_argument("--model", required=True, help="run folder, checkpoint, or SentenceTransformer folder")
    p.add_argument("--tasks", nargs="+", metavar="NAME", help="MTEB task names (e.g. SciFact); need a network")
    p.add_argument("--data", help="a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--split", default="test", help="the local folder's qrels split")
    p.add_argument("--out", help="write OUT/result.json (flexbert/eval/evaluation.py's schema)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--max-seq-len", type=at_least(8), help="truncate inputs (default: the model's)")
    p.add_argument("--batch-size", type=at_least(1), default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    return p


def run(a: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(a).items() if k != "json" and v is not None}
    result = run_evaluation("mteb", options)
    if a.json:
        print(json.dumps({"model": result.model["ref"], "tasks": result.details["tasks"], "metrics": result.metrics}))
        return 0
    for split, values in result.metrics.items():
        tasks = dict.fromkeys(k.rpartition("/")[0] for k in values)
        for task in tasks:
            scores = {k.rpartition("/")[2]: v for k, v in values.items() if k.rpartition("/")[0] == task}
            print(f"{result.model['ref']} on {task} ({split}): " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return 0


main = command(parser, run, also=(ValueError,))
