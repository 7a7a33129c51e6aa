"""Task files for fine-tuning: GLUE-layout TSV (header row), CSV, or JSONL; one or two text columns.

``load_task(path, ["sentence1", "sentence2"], "label", "classification")`` returns the examples;
``LabelSpace.from_labels`` fixes the classes from the training file so validation/test files map
to the same ids.  Every problem raises ``TaskFileError`` with one line naming the file (and the
column or line): a missing column, an empty file, a label that is neither a class nor a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from flexbert.data.readers import InputError, ReadOptions, read_records, split_suffix
from flexbert.errors import FlexBertError
from flexbert.eval import metrics as M
from flexbert.registry import unknown_choice


class TaskFileError(FlexBertError, ValueError):
    """One line naming the file and the column / line that cannot be used."""


@dataclass(frozen=True)
class TaskKind:
    """What a fine-tuning task is: its metrics (the first one the default to keep the best epoch by)
    and whether its labels are values (one regression output) or classes."""

    name: str
    metrics: tuple[str, ...]
    regression: bool


# the one table of task kinds (fine-tuning's evaluations are registered per kind: flexbert/eval/finetune.py)
TASK_KINDS = {"classification": TaskKind("classification", M.CLASSIFICATION, False),
              "regression": TaskKind("regression", M.REGRESSION, True)}


def task_kind(name: str, key: str = "task") -> TaskKind:
    if name not in TASK_KINDS:
        raise TaskFileError(unknown_choice(key, "task", name, TASK_KINDS))
    return TASK_KINDS[name]


FORMATS = (".tsv", ".csv", ".jsonl", ".json", ".parquet")  # the table formats of flexbert/data/readers.py


def read_rows(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) pairs, header names as keys, through the reader registry (any compression).
    TSV is read as GLUE writes it: tab-separated, no quoting (quotes are part of the text)."""
    ext = split_suffix(path)[0]
    if ext not in FORMATS:
        raise TaskFileError(f"{path}: unknown file type '{ext}'; valid: .tsv (GLUE layout, header row), "
                            ".csv, .jsonl, .json, .parquet (optionally compressed)")
    try:
        return [(r.line, r.value) for r in read_records(path, ReadOptions())]
    except InputError as e:
        raise TaskFileError(str(e)) from None


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

    @property
    def regression(self) -> bool:
        return task_kind(self.task).regression

    @classmethod
    def from_labels(cls, task: str, raw: Sequence[Any], path: str, column: str) -> "LabelSpace":
        if task_kind(task).regression:
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
        return 1 if self.regression else len(self.names)

    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def encode(self, value: Any, path: str, column: str, line: int) -> float | int:
        """The label's id (classification) or value (regression); ``line``: where it is in the file."""
        where = f"{path}:{line}: column '{column}'"
        if self.regression:
            try:
                if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
                    raise ValueError
                number = float(value)
            except ValueError:
                raise TaskFileError(f"{where}: {value!r} is not a number (regression needs numeric labels)") from None
            if not math.isfinite(number):
                raise TaskFileError(f"{where}: {value!r} is not a finite number (a regression label cannot be nan or inf)")
            return number
        name = _class_name(value)
        if name is None:
            raise TaskFileError(f"{where}: unknown label type {value!r}; "
                                "classification labels are ints or strings (use --task regression for real values)")
        if name not in self.names:
            raise TaskFileError(f"{where}: label {name!r} is not one of the training labels {self.names}")
        return self.names.index(name)


@dataclass
class TaskData:
    path: str
    texts: list[tuple[str, ...]]  # one or two texts per example
    labels: Optional[list]  # ids (classification) or floats; None if the file has no label column


def load_task(path: str, text_columns: Sequence[str], label_column: str, labels: Optional[LabelSpace] = None,
              task: str = "classification", require_labels: bool = True) -> tuple[TaskData, LabelSpace]:
    """Read one task file; ``labels`` from the training file (built here when None)."""
    task_kind(task, "--task")
    if not 1 <= len(text_columns) <= 2:
        raise TaskFileError(f"--text-columns: give one or two columns, got {len(text_columns)}")
    rows = read_rows(path)
    if not rows:
        raise TaskFileError(f"{path}: no examples (empty file, or a header row only)")
    columns = list(rows[0][1].keys())
    for col in text_columns:
        if col not in rows[0][1]:
            raise TaskFileError(f"{path}: text column '{col}' not found; columns: {', '.join(columns)}")
    has_labels = label_column in rows[0][1]
    if not has_labels and require_labels:
        raise TaskFileError(f"{path}: label column '{label_column}' not found; columns: {', '.join(columns)}")
    texts = []
    for line, r in rows:
        parts = []
        for col in text_columns:
            v = r.get(col)
            if not isinstance(v, str):
                raise TaskFileError(f"{path}:{line}: text column '{col}': expected text, got {v!r}")
            parts.append(v)
        texts.append(tuple(parts))
    if labels is None:
        labels = LabelSpace.from_labels(task, [r.get(label_column) for _, r in rows], path, label_column)
    ids = [labels.encode(r.get(label_column), path, label_column, line) for line, r in rows] if has_labels else None
    return TaskData(path, texts, ids), labels
