"""Task files for fine-tuning: GLUE-layout TSV (header row), CSV, or JSONL; one or two text columns.

``load_task(path, ["sentence1", "sentence2"], "label", "classification")`` returns the examples;
``LabelSpace.from_labels`` fixes the classes from the training file so validation/test files map
to the same ids.  Every problem raises ``TaskFileError`` with one line naming the file (and the
column or line): a missing column, an empty file, a label that is neither a class nor a number.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

TASKS = ("classification", "regression")
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


class TaskFileError(ValueError):
    """One line naming the file and the column / line that cannot be used."""


def _open(path: str):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.endswith(".gz") else open(path, encoding="utf-8", newline="")


def file_format(path: str) -> str:
    stem = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(stem)[1].lower()
    if ext not in FORMATS:
        raise TaskFileError(f"{path}: unknown file type '{ext}'; valid: .tsv (GLUE layout, header row), .csv, .jsonl")
    return FORMATS[ext]


def read_rows(path: str) -> list[dict[str, Any]]:
    """Rows as dicts (header names as keys).  TSV is read as GLUE writes it: tab-separated, no
    quoting (quotes are part of the text)."""
    if not os.path.exists(path):
        raise TaskFileError(f"{path}: no such file")
    fmt = file_format(path)
    with _open(path) as f:
        if fmt == "jsonl":
            rows = []
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskFileError(f"{path}: line {i} is not JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise TaskFileError(f"{path}: line {i} is not a JSON object")
                rows.append(rec)
            return rows
        if fmt == "tsv":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(f)
        table = [r for r in reader if r]
    if not table:
        return []
    header, body = table[0], table[1:]
    rows = []
    for i, r in enumerate(body, 2):
        if len(r) != len(header):
            raise TaskFileError(f"{path}: line {i} has {len(r)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, r)))
    return rows


def _class_name(value: Any) -> Optional[str]:
    """A label as a class name: ints (and int-valued floats/strings) and strings; None otherwise."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else None
    if isinstance(value, str) and value.strip():
        v = value.strip()
        try:
            f = float(v)
        except ValueError:
            return v
        return str(int(f)) if f.is_integer() else None
    return None


@dataclass
class LabelSpace:
    """Class names in id order (classification) or none (regression)."""

    task: str
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_labels(cls, task: str, raw: Sequence[Any], path: str, column: str) -> "LabelSpace":
        if task == "regression":
            return cls(task)
        names = {_class_name(v) for v in raw}
        names.discard(None)
        if all(n.lstrip("-").isdigit() for n in names):
            ordered = sorted(names, key=int)  # 0, 1, 2 ... keep their numeric order
        else:
            ordered = sorted(names)
        if len(ordered) < 2:
            raise TaskFileError(f"{path}: column '{column}' has {len(ordered)} class(es); classification needs at least 2")
        return cls(task, ordered)

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.names)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def encode(self, value: Any, path: str, column: str, line: int) -> float | int:
        if self.task == "regression":
            try:
                if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
                    raise ValueError
                return float(value)
            except ValueError:
                raise TaskFileError(f"{path}: column '{column}', row {line}: {value!r} is not a number (regression needs numeric labels)") from None
        name = _class_name(value)
        if name is None:
            raise TaskFileError(f"{path}: column '{column}', row {line}: unknown label type {value!r}; "
                                "classification labels are ints or strings (use --task regression for real values)")
        if name not in self.names:
            raise TaskFileError(f"{path}: column '{column}', row {line}: label {name!r} is not one of the training labels {self.names}")
        return self.names.index(name)


@dataclass
class TaskData:
    path: str
    texts: list[tuple[str, ...]]  # one or two texts per example
    labels: Optional[list]  # ids (classification) or floats; None if the file has no label column


def load_task(path: str, text_columns: Sequence[str], label_column: str, labels: Optional[LabelSpace] = None,
              task: str = "classification", require_labels: bool = True) -> tuple[TaskData, LabelSpace]:
    """Read one task file; ``labels`` from the training file (built here when None)."""
    if task not in TASKS:
        raise TaskFileError(f"--task: unknown task '{task}'; valid: {', '.join(TASKS)}")
    if not 1 <= len(text_columns) <= 2:
        raise TaskFileError(f"--text-columns: give one or two columns, got {len(text_columns)}")
    rows = read_rows(path)
    if not rows:
        raise TaskFileError(f"{path}: no examples (empty file, or a header row only)")
    columns = list(rows[0].keys())
    for col in text_columns:
        if col not in rows[0]:
            raise TaskFileError(f"{path}: text column '{col}' not found; columns: {', '.join(columns)}")
    has_labels = label_column in rows[0]
    if not has_labels and require_labels:
        raise TaskFileError(f"{path}: label column '{label_column}' not found; columns: {', '.join(columns)}")
    texts = []
    for i, r in enumerate(rows, 1):
        parts = []
        for col in text_columns:
            v = r.get(col)
            if not isinstance(v, str):
                raise TaskFileError(f"{path}: text column '{col}', row {i}: expected text, got {v!r}")
            parts.append(v)
        texts.append(tuple(parts))
    if labels is None:
        labels = LabelSpace.from_labels(task, [r.get(label_column) for r in rows], path, label_column)
    ids = [labels.encode(r.get(label_column), path, label_column, i) for i, r in enumerate(rows, 1)] if has_labels else None
    return TaskData(path, texts, ids), labels
