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

import torch

from flexbert.data.readers import InputError, read_records
from flexbert.errors import FlexBertError

COLUMNS = ("anchor", "positive", "negative")  # what the losses read, in this order


class RetrievalTrainingError(FlexBertError, ValueError):
    """Rows or a run that cannot teach the model anything (one line naming the file or the count)."""


def _has_text(row: dict, column: str) -> bool:
    return isinstance(row.get(column), str) and bool(row[column].strip())


def read_pairs(path: str, query_column: str = "query", positive_column: str = "positive",
               negative_column: str = "negative", skip_empty: bool = False,
               skipped: Optional[list[int]] = None) -> dict[str, list[str]]:
    """Columns ``anchor``, ``positive`` (and ``negative`` when any row has one) of one file,
    checked like an evaluation folder: a column a row lacks, a blank text (``skip_empty``: left out,
    its line appended to ``skipped``) and a row repeating an earlier one are errors naming file:line."""
    records = [(r.line, r.value if isinstance(r.value, dict) else {}) for r in read_records(path)]
    triplets = any(_has_text(row, negative_column) for _, row in records)
    columns = (query_column, positive_column) + ((negative_column,) if triplets else ())
    table: dict[str, list] = {"anchor": [], "positive": [], **({"negative": []} if triplets else {})}
    left_out: list[int] = []
    first: dict[tuple, int] = {}
    for line, row in records:
        absent = [(c, flag) for c, flag in ((query_column, "query"), (positive_column, "positive")) if c not in row]
        if absent:
            raise InputError(f"{path}:{line}: no column '{absent[0][0]}' (columns: {', '.join(row) or 'none'}; "
                             f"name yours with --{absent[0][1]}-column)")
        blank = [c for c in columns if not _has_text(row, c)]
        if blank:
            if not skip_empty:
                other = " (other rows are triplets)" if blank[0] == negative_column else ""
                raise InputError(f"{path}:{line}: no text in column '{blank[0]}'{other}; fix it, or pass --skip-empty")
            left_out.append(line)
            continue
        key = tuple(row[c] for c in columns)
        if key in first:
            raise InputError(f"{path}:{line}: the same row as line {first[key]}; remove one (a copy is no new pair, "
                             "and copies leave batches without a negative)")
        first[key] = line
        for name, column in zip(COLUMNS, columns):
            table[name].append(row[column])
    if len(table["anchor"]) < 2:
        raise InputError(f"{path}: {len(table['anchor'])} pair(s){' left' if left_out else ''}; in-batch negatives need at least 2")
    if skipped is not None:
        skipped.extend(left_out)
    return table


class _Rows:
    """The table as the no-duplicates batch sampler reads a dataset (column names, rows by index)."""

    def __init__(self, table: dict[str, list[str]]):
        self.column_names = [c for c in COLUMNS if c in table]
        self.rows = list(zip(*(table[c] for c in self.column_names)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.column_names, self.rows[i]))


def check_batches(table: dict[str, list[str]], batch_size: int, seed: int, path: str) -> list[int]:
    """The rows per batch of the first epoch as sentence-transformers' no-duplicates sampler makes
    them (no text twice in a batch); pairs whose batches hold one pair - no in-batch negative, a loss
    of exactly 0 - beyond the one a row count may leave at the end are refused, with the count."""
    from sentence_transformers.sampler import NoDuplicatesBatchSampler  # optional: the 'retrieval' extra

    sizes = [len(b) for b in NoDuplicatesBatchSampler(_Rows(table), batch_size=batch_size, drop_last=False,
                                                      generator=torch.Generator(), seed=seed)]
    single = sizes.count(1)
    if "negative" not in table and single > (1 if len(table["anchor"]) % batch_size == 1 else 0):
        raise RetrievalTrainingError(
            f"{path}: {single} of {len(sizes)} batches would hold a single pair, with no in-batch negative (a loss of 0: "
            f"nothing learned); a batch takes no text twice, and the {len(table['anchor'])} rows share their texts "
            f"(distinct queries: {len(set(table['anchor']))}, positives: {len(set(table['positive']))}); give pairs that "
            "share no text, or a negative column")
    return sizes


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


def pair_datasets(paths: list[str], columns: tuple[str, str, str] = ("query", "positive", "negative"),
                  skip_empty: bool = False, batch_size: Optional[int] = None, seed: int = 0):
    """(the training data: a ``Dataset`` for one file, a ``DatasetDict`` by file name for several;
    ``{name: (rows, "pairs" | "triplets")}``; the warnings: rows left out by ``skip_empty``).  With
    ``batch_size`` each file's batches are checked (``check_batches``) before any training."""
    from datasets import Dataset, DatasetDict

    tables, warnings = {}, []
    for name, p in zip(dataset_names(paths), paths):
        skipped: list[int] = []
        tables[name] = read_pairs(p, *columns, skip_empty=skip_empty, skipped=skipped)
        if skipped:
            warnings.append(f"{p}: left out {len(skipped)} row(s) with a blank text (--skip-empty)")
        if batch_size:
            check_batches(tables[name], batch_size, seed, p)
    data = {name: Dataset.from_dict(t) for name, t in tables.items()}
    summary = {name: (len(t["anchor"]), "triplets" if "negative" in t else "pairs") for name, t in tables.items()}
    if len(data) == 1:
        return next(iter(data.values())), summary, warnings
    return DatasetDict(data), summary, warnings


def column_prompts(names: Optional[list[str]], query: Optional[str], passage: Optional[str]
                   ) -> Union[None, dict[str, str], dict[str, dict[str, str]]]:
    """The trainer's ``prompts``: the query prompt before every anchor, the passage prompt before
    every positive and negative (per dataset name when there are several: sentence-transformers'
    nested form, so a dataset name is never taken for a column name)."""
    per_column = {c: p for c, p in zip(COLUMNS, (query, passage, passage)) if p}
    if not per_column:
        return None
    return {name: dict(per_column) for name in names} if names else per_column
