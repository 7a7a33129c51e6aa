"""The BEIR layout: the one reader and writer of retrieval evaluation folders.

BEIR layout (the format of the BEIR benchmark's data sets)::

    FOLDER/corpus.jsonl      {"_id": "d1", "title": "...", "text": "..."} per line
    FOLDER/queries.jsonl     {"_id": "q1", "text": "..."} per line
    FOLDER/qrels/test.tsv    query-id <TAB> corpus-id <TAB> score, with a header row

Files are read through the reader registry (flexbert/data/readers.py: errors name file and line).
Nothing is scored on a folder that would give a wrong number: a repeated ``_id`` (an error naming
both lines), a blank query or document (an error naming its line; ``skip_empty`` leaves them out and
counts them), judgements naming a query or document the folder lacks (counted and named: left out
with a warning when others remain, an error when none does).
Retrieval evaluation (flexbert/eval/retrieval.py), retrieval fine-tuning and the demo corpus
(flexbert/data/demo_corpus.py) read and write it through here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from flexbert.data.readers import InputError, read_records
from flexbert.errors import FlexBertError


class BeirError(FlexBertError, ValueError):
    """A BEIR folder that cannot be used (one line naming the file and what is wrong)."""


@dataclass
class Beir:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text (only queries with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance > 0}
    warnings: list[str] = field(default_factory=list)  # judgements left out, records skipped: say them


def _need(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise BeirError(f"{folder}: no {name} (BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    return path


def _names(ids: list[str], shown: int = 3) -> str:
    return ", ".join(ids[:shown]) + (", ..." if len(ids) > shown else "")


def _qrels(path: str) -> tuple[dict[str, dict[str, int]], int]:
    """{query id: {doc id: score > 0}} and the number of judgement lines."""
    qrels: dict[str, dict[str, int]] = {}
    lines = 0
    for r in read_records(path):
        lines += 1
        qid, did, score = str(r.value["query-id"]), str(r.value["corpus-id"]), r.value["score"]
        try:
            score = int(score)
        except (TypeError, ValueError):
            raise BeirError(f"{path}:{r.line}: score {score!r} is not a whole number (relevance: 0, 1, 2, ...)") from None
        if score > 0:
            qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise BeirError(f"{path}: no judgement with a score above 0 ({lines} line(s)): nothing to score; a relevant "
                        "document has a score of 1 or more")
    return qrels, lines


def _texts(path: str, kind: str, text_of, wanted, skip_empty: bool) -> tuple[dict[str, str], list[str]]:
    """{id: text} of the records ``wanted(id)`` keeps, and the ids of blank ones skipped
    (``skip_empty``; else a blank one is an error naming its line); a repeated ``_id`` is an error
    naming both lines."""
    texts: dict[str, str] = {}
    first: dict[str, int] = {}
    skipped: list[str] = []
    for r in read_records(path):
        rid = str(r.value["_id"])
        if rid in first:
            raise BeirError(f"{path}:{r.line}: _id {rid!r} again (first at line {first[rid]}): ids must be unique; "
                            "remove or rename one")
        first[rid] = r.line
        if not wanted(rid):
            continue
        text = text_of(r.value)
        if not text.strip():
            if not skip_empty:
                raise BeirError(f"{path}:{r.line}: {kind} {rid!r} has no text; fix it, or pass --skip-empty to leave "
                                "blank records out")
            skipped.append(rid)
            continue
        texts[rid] = text
    return texts, skipped


def _doc_text(record: dict) -> str:
    return " ".join(str(x) for x in (record.get("title"), record.get("text")) if x)


def load_beir(folder: str, split: str = "test", skip_empty: bool = False) -> Beir:
    """The folder's corpus, judged queries and judgements of ``split``, checked before anything is
    scored: ids unique per file, no blank text (or ``skip_empty``: left out and counted), every
    judgement naming a query and a document the folder has.  Judgements that cannot be scored are
    left out and said in ``Beir.warnings``; none left is a ``BeirError``."""
    try:
        qrels_path = _need(folder, os.path.join("qrels", f"{split}.tsv"))
        qrels, _ = _qrels(qrels_path)
        queries, blank_q = _texts(_need(folder, "queries.jsonl"), "query", lambda v: str(v.get("text") or ""),
                                  qrels.__contains__, skip_empty)
        corpus, blank_d = _texts(_need(folder, "corpus.jsonl"), "document", _doc_text, lambda _: True, skip_empty)
    except KeyError as e:
        raise BeirError(f"{folder}: a record without the field {e} (BEIR: _id, text; query-id, corpus-id, score)") from None
    except InputError as e:
        raise BeirError(str(e)) from None
    return _judged(folder, qrels_path, Beir(corpus, queries, qrels), set(blank_q), set(blank_d))


def _plural(n: int, word: str, many: str = "") -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def _judged(folder: str, qrels_path: str, data: Beir, blank_q: set, blank_d: set) -> Beir:
    """``data`` with the judgements that name a missing or skipped query or document left out."""
    pairs = [(q, d) for q, rel in data.qrels.items() for d in rel]
    no_query = sorted({q for q, _ in pairs if q not in data.queries and q not in blank_q})
    no_doc = sorted({d for q, d in pairs if d not in data.corpus and d not in blank_d and q in data.queries})
    blank = sum(1 for q, d in pairs if q in blank_q or (q in data.queries and d in blank_d))
    keep = [(q, d) for q, d in pairs if q in data.queries and d in data.corpus]
    why = [f"queries.jsonl lacks {_plural(len(no_query), 'query', 'queries')} they name ({_names(no_query)})"] * bool(no_query)
    why += [f"corpus.jsonl lacks {_plural(len(no_doc), 'document')} they name ({_names(no_doc)})"] * bool(no_doc)
    why += [f"{blank} name{'s' if blank == 1 else ''} a blank record (--skip-empty)"] * bool(blank)
    if blank_q or blank_d:
        data.warnings.append(f"{folder}: left out {_plural(len(blank_q), 'blank query', 'blank queries')} and "
                             f"{_plural(len(blank_d), 'blank document')} (--skip-empty)")
    if not keep:
        raise BeirError(f"{qrels_path}: none of its {_plural(len(pairs), 'judgement')} can be scored: {'; '.join(why)}; "
                        "check --split and that the ids match corpus.jsonl and queries.jsonl")
    if len(keep) < len(pairs):
        data.warnings.append(f"{qrels_path}: {len(pairs) - len(keep)} of {_plural(len(pairs), 'judgement')} left out "
                             f"of the scores: {'; '.join(why)}; the metrics cover the other {len(keep)}")
    qrels: dict[str, dict[str, int]] = {}
    for q, d in keep:
        qrels.setdefault(q, {})[d] = data.qrels[q][d]
    return Beir(data.corpus, {q: data.queries[q] for q in qrels}, qrels, data.warnings)


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
