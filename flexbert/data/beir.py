"""The BEIR layout: the one reader and writer of retrieval evaluation folders.

BEIR layout (the format of the BEIR benchmark's data sets)::

    FOLDER/corpus.jsonl      {"_id": "d1", "title": "...", "text": "..."} per line
    FOLDER/queries.jsonl     {"_id": "q1", "text": "..."} per line
    FOLDER/qrels/test.tsv    query-id <TAB> corpus-id <TAB> score, with a header row

Files are read through the reader registry (flexbert/data/readers.py: errors name file and line).
Retrieval evaluation (flexbert/eval/retrieval.py), retrieval fine-tuning and the demo corpus
(flexbert/data/demo_corpus.py) read and write it through here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from flexbert.data.readers import InputError, read_records
from flexbert.errors import FlexBertError


class BeirError(FlexBertError, ValueError):
    """A BEIR folder that cannot be used (one line naming the file and what is wrong)."""


@dataclass
class Beir:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text (only queries with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance > 0}


def _need(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise BeirError(f"{folder}: no {name} (BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
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
        raise BeirError(f"{folder}: a record without the field {e} (BEIR: _id, text; query-id, corpus-id, score)") from None
    except InputError as e:
        raise BeirError(str(e)) from None
    missing = sorted(q for q in qrels if q not in queries)
    if missing:
        raise BeirError(f"{folder}: qrels name query {missing[0]!r}, which queries.jsonl does not have")
    return Beir(corpus, {q: queries[q] for q in qrels}, qrels)


def write_beir(folder: str, corpus: dict[str, str], queries: dict[str, str],
               qrels: dict[str, dict[str, dict[str, int]]]) -> None:
    """Write the BEIR layout ``load_beir`` reads: ``qrels`` maps a split name to its judgements."""
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) + "\n" for d, t in corpus.items())
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())
    for split, judged in qrels.items():
        with open(os.path.join(folder, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t{s}\n" for q, rel in judged.items() for d, s in rel.items())
