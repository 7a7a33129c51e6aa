"""Reading raw text documents from .txt / .jsonl / .parquet files, each optionally .gz or .bz2.

Every problem with an input is an :class:`InputError` whose message is one line starting with
``path:line:`` (or ``path:`` when no line applies), so a CLI can print it and exit 2.

Documents are yielded with their origin (file and 1-based line, or row for parquet); empty
documents are yielded too, so that the caller can count what it skips instead of losing it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
from dataclasses import dataclass
from typing import IO, Iterator

TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open}


class InputError(ValueError):
    """Bad input; the message is one line naming the file (and line when there is one)."""


@dataclass
class Document:
    text: str
    path: str
    line: int  # 1-based line (txt: first line of the paragraph; parquet: row)
    replaced: bool = False  # invalid UTF-8 bytes were replaced by U+FFFD


def split_suffix(path: str) -> tuple[str, str | None]:
    """('.jsonl', '.gz') for 'a/b.jsonl.gz'; the format suffix is lower-cased."""
    name = os.path.basename(path).lower()
    comp = None
    for c in COMPRESSIONS:
        if name.endswith(c):
            comp, name = c, name[: -len(c)]
            break
    return os.path.splitext(name)[1], comp


def is_supported(path: str) -> bool:
    fmt, _ = split_suffix(path)
    return fmt in TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES


def expand_inputs(paths: list[str]) -> list[str]:
    """Files as given; directories expand to their supported files, sorted (deterministic)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, f) for root, _, files in os.walk(p) for f in files if is_supported(f)
            )
            if not found:
                raise InputError(f"{p}: directory holds no .txt/.jsonl/.parquet files")
            out += found
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        elif not is_supported(p):
            raise InputError(f"{p}: unsupported input type (expected .txt, .jsonl or .parquet, optionally .gz/.bz2)")
        else:
            out.append(p)
    return out


def _open_binary(path: str) -> IO[bytes]:
    _, comp = split_suffix(path)
    return COMPRESSIONS[comp](path, "rb") if comp else open(path, "rb")


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without its terminator); decompression errors become InputError."""
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw.rstrip(b"\n").rstrip(b"\r")
    except (OSError, EOFError) as e:  # truncated/corrupt .gz/.bz2, unreadable file
        raise InputError(f"{path}:{lineno + 1}: cannot read: {e}") from None


def _decode(raw: bytes, path: str, lineno: int, errors: str) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as e:
        if errors == "replace":
            return raw.decode("utf-8", errors="replace"), True
        raise InputError(
            f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "pass --errors replace to substitute U+FFFD"
        ) from None


def _iter_txt(path: str, mode: str, errors: str) -> Iterator[Document]:
    if mode == "line":
        for lineno, raw in _lines(path):
            text, rep = _decode(raw, path, lineno, errors)
            yield Document(text, path, lineno, rep)
        return
    # paragraph mode: blank lines separate documents; lines within a paragraph keep their "\n"
    buf: list[str] = []
    start, rep_any = 0, False
    for lineno, raw in _lines(path):
        text, rep = _decode(raw, path, lineno, errors)
        if text.strip():
            if not buf:
                start, rep_any = lineno, False
            buf.append(text)
            rep_any |= rep
        elif buf:
            yield Document("\n".join(buf), path, start, rep_any)
            buf = []
    if buf:
        yield Document("\n".join(buf), path, start, rep_any)


def _iter_jsonl(path: str, field: str, errors: str) -> Iterator[Document]:
    for lineno, raw in _lines(path):
        if not raw.strip():
            continue  # blank separator lines hold no record
        line, rep = _decode(raw, path, lineno, errors)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        if field not in obj:
            keys = ", ".join(list(obj)[:8]) or "none"
            raise InputError(f"{path}:{lineno}: missing field '{field}' (keys: {keys}); choose one with --field")
        text = obj[field]
        if text is None:
            text = ""  # an explicit null is an empty document: skipped and counted
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: field '{field}' is {type(text).__name__}, expected a string")
        yield Document(text, path, lineno, rep)


def _iter_parquet(path: str, field: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    _, comp = split_suffix(path)
    try:
        if comp:  # parquet needs random access: decompress the outer wrapper into memory
            with _open_binary(path) as f:
                source = io.BytesIO(f.read())
        else:
            source = path
        pf = pq.ParquetFile(source)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"{path}: cannot read parquet: {str(e).splitlines()[0]}") from None
    if field not in pf.schema_arrow.names:
        raise InputError(f"{path}: missing column '{field}' (columns: {', '.join(pf.schema_arrow.names)})")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            row += 1
            if text is None:
                text = ""
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if not isinstance(text, str):
                raise InputError(f"{path}:{row}: column '{field}' holds {type(text).__name__}, expected strings")
            yield Document(text, path, row)


def iter_documents(path: str, field: str = "text", txt_mode: str = "line", errors: str = "strict") -> Iterator[Document]:
    """Every document of one input file, in file order (empty ones included)."""
    if txt_mode not in ("line", "paragraph"):
        raise ValueError(f"txt_mode must be 'line' or 'paragraph', got {txt_mode!r}")
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
    fmt, _ = split_suffix(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if fmt in TEXT_SUFFIXES:
        return _iter_txt(path, txt_mode, errors)
    if fmt in JSONL_SUFFIXES:
        return _iter_jsonl(path, field, errors)
    if fmt in PARQUET_SUFFIXES:
        return _iter_parquet(path, field)
    raise InputError(f"{path}: unsupported input type '{fmt}' (expected .txt, .jsonl or .parquet)")
