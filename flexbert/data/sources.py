"""Raw text documents from corpus files: every format of the reader registry
(``flexbert/data/readers.py``: .txt, .jsonl, .json, .csv, .tsv, .parquet, each optionally
compressed).

Every problem with an input is an :class:`InputError` whose message is one line starting with
``path:line:`` (or ``path:`` when no line applies), so a CLI can print it and exit 2.

Documents are yielded with their origin (file and 1-based line, or row for parquet); empty
documents are yielded too, so that the caller can count what it skips instead of losing it.
A ``.txt`` file is one document per line, or per paragraph (``txt_mode="paragraph"``); the table
formats take the text from one field / column (``field``, default ``text``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from flexbert.data.readers import InputError, ReadOptions, Record, formats, is_supported, read_records, split_suffix

TEXT_SUFFIXES = (".txt", ".text")  # one document per line or paragraph; the other formats are tables
__all__ = ["Document", "InputError", "expand_inputs", "iter_documents"]


@dataclass
class Document:
    text: str
    path: str
    line: int  # 1-based line (txt: first line of the paragraph; parquet: row)
    replaced: bool = False  # invalid UTF-8 bytes were replaced by U+FFFD


def expand_inputs(paths: list[str]) -> list[str]:
    """Files as given; directories expand to their supported files, sorted (deterministic)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, f) for root, _, files in os.walk(p) for f in files if is_supported(f)
            )
            if not found:
                raise InputError(f"{p}: directory holds no readable files ({formats()})")
            out += found
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        elif not is_supported(p):
            raise InputError(f"{p}: unsupported input type (expected {formats()})")
        else:
            out.append(p)
    return out


def _paragraphs(records: Iterator[Record], path: str) -> Iterator[Document]:
    """Blank lines separate documents; lines within a paragraph keep their "\n"."""
    buf: list[str] = []
    start, rep_any = 0, False
    for r in records:
        if r.value.strip():
            if not buf:
                start, rep_any = r.line, False
            buf.append(r.value)
            rep_any |= r.replaced
        elif buf:
            yield Document("\n".join(buf), path, start, rep_any)
            buf = []
    if buf:
        yield Document("\n".join(buf), path, start, rep_any)


def _field(records: Iterator[Record], path: str, field: str) -> Iterator[Document]:
    for r in records:
        if field not in r.value:
            keys = ", ".join(list(r.value)[:8]) or "none"
            raise InputError(f"{path}:{r.line}: missing field '{field}' (keys: {keys}); choose one with --field")
        text = r.value[field]
        if text is None:
            text = ""  # an explicit null is an empty document: skipped and counted
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise InputError(f"{path}:{r.line}: field '{field}' is {type(text).__name__}, expected a string")
        yield Document(text, path, r.line, r.replaced)


def iter_documents(path: str, field: str = "text", txt_mode: str = "line", errors: str = "strict") -> Iterator[Document]:
    """Every document of one input file, in file order (empty ones included)."""
    if txt_mode not in ("line", "paragraph"):
        raise ValueError(f"txt_mode must be 'line' or 'paragraph', got {txt_mode!r}")
    records = read_records(path, ReadOptions(errors=errors, columns=[field], tsv_quoting=True))
    if split_suffix(path)[0] in TEXT_SUFFIXES:
        if txt_mode == "paragraph":
            return _paragraphs(records, path)
        return (Document(r.value, path, r.line, r.replaced) for r in records)
    return _field(records, path, field)

