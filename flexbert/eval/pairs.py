"""Pair data for the contrastive stage: (query, positive[, negative]) rows from one or more files.

Each file is any table format of the reader registry (flexbert/data/readers.py: .jsonl, .csv,
.tsv, .parquet, compressed too) with a query and a positive column and, for triplets, a negative
column (the one ``flexbert mine-negatives`` writes).  A file becomes a ``datasets.Dataset`` with the
columns sentence-transformers' losses take in order (``anchor``, ``positive``[, ``negative``]);
several files become a ``DatasetDict`` keyed by file name, which sentence-transformers' trainer
samples batch by batch (round robin or in proportion to size: each batch comes from one file and
its no-duplicates sampler, so no text appears twice in a batch).
"""

from __future__ import annotations

import os
from typing import Optional, Union

from flexbert.data.readers import InputError, read_records

COLUMNS = ("anchor", "positive", "negative")  # what the losses read, in this order


def read_pairs(path: str, query_column: str = "query", positive_column: str = "positive",
               negative_column: str = "negative") -> dict[str, list[str]]:
    """Columns ``anchor``, ``positive`` (and ``negative`` when every row has one) of one file; a
    row without text in a column is one line naming the file, the line and the column."""
    def text(row: dict, column: str) -> bool:
        return isinstance(row.get(column), str) and bool(row[column].strip())

    rows = []
    for r in read_records(path):
        row = r.value if isinstance(r.value, dict) else {}
        missing = [c for c in (query_column, positive_column) if not text(row, c)]
        if missing:
            raise InputError(f"{path}:{r.line}: no text in column '{missing[0]}' (columns: {', '.join(row) or 'none'})")
        rows.append((r.line, row))
    if len(rows) < 2:
        raise InputError(f"{path}: {len(rows)} pair(s); in-batch negatives need at least 2")
    table = {"anchor": [row[query_column] for _, row in rows], "positive": [row[positive_column] for _, row in rows]}
    has_negative = [text(row, negative_column) for _, row in rows]
    if any(has_negative):
        if not all(has_negative):
            line = rows[has_negative.index(False)][0]
            raise InputError(f"{path}:{line}: no text in column '{negative_column}' (other rows are triplets)")
        table["negative"] = [row[negative_column] for _, row in rows]
    return table


def dataset_names(paths: list[str]) -> list[str]:
    """One name per file (its name without extensions; ``-2``, ``-3`` after a repeated name)."""
    names: list[str] = []
    for p in paths:
        base = os.path.basename(p).split(".")[0] or "pairs"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def pair_datasets(paths: list[str], columns: tuple[str, str, str] = ("query", "positive", "negative")):
    """(the training data: a ``Dataset`` for one file, a ``DatasetDict`` by file name for several;
    ``{name: (rows, "pairs" | "triplets")}``)."""
    from datasets import Dataset, DatasetDict

    tables = {name: read_pairs(p, *columns) for name, p in zip(dataset_names(paths), paths)}
    data = {name: Dataset.from_dict(t) for name, t in tables.items()}
    summary = {name: (len(t["anchor"]), "triplets" if "negative" in t else "pairs") for name, t in tables.items()}
    if len(data) == 1:
        return next(iter(data.values())), summary
    return DatasetDict(data), summary


def column_prompts(names: Optional[list[str]], query: Optional[str], passage: Optional[str]
                   ) -> Union[None, dict[str, str], dict[str, dict[str, str]]]:
    """The trainer's ``prompts``: the query prompt before every anchor, the passage prompt before
    every positive and negative (per dataset name when there are several: sentence-transformers'
    nested form, so a dataset name is never taken for a column name)."""
    per_column = {c: p for c, p in zip(COLUMNS, (query, passage, passage)) if p}
    if not per_column:
        return None
    return {name: dict(per_column) for name in names} if names else per_column
