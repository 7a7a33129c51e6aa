"""Input readers: one registry from a file's format suffix to the reader of its records.

Every reader yields ``Record(line, value, replaced)``: ``value`` is a line of text for ``.txt`` and a
dict (column -> value) for the table formats (``.jsonl``, ``.json``, ``.csv``, ``.tsv``,
``.parquet``); ``line`` is the 1-based line the record starts on (parquet and JSON arrays: the
record's number).  Each format may also be compressed (``.gz``, ``.bz2``, ``.xz``, and ``.zst``
when the ``zstandard`` package is installed): ``corpus.csv.gz``.  A UTF-8 byte-order mark is
dropped.  Every problem is an :class:`InputError` whose message is one line starting with
``path:line:`` (or ``path:``).

The corpus reader (``flexbert/data/sources.py``) and the fine-tuning task files
(``flexbert/eval/tasks.py``) both read through here.  Adding a format is one function::

    @READERS.register(".myformat")
    def _read_myformat(path: str, opts: ReadOptions) -> Iterator[Record]:
        for line, raw in lines(path):
            text, replaced = decode(raw, path, line, opts.errors)
            yield Record(line, {"text": text}, replaced)
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Optional

from flexbert.errors import FlexBertError
from flexbert.registry import Registry


class InputError(FlexBertError, ValueError):
    """Bad input; the message is one line naming the file (and line when there is one)."""


@dataclass
class Record:
    line: int  # 1-based line the record starts on (parquet, JSON array: the record's number)
    value: Any  # str (.txt) or dict (table formats)
    replaced: bool = False  # invalid UTF-8 bytes were replaced by U+FFFD


@dataclass
class ReadOptions:
    errors: str = "strict"  # strict | replace (invalid UTF-8)
    columns: Optional[list[str]] = None  # parquet: read only these columns (a hint; others may come too)
    tsv_quoting: bool = False  # False: tab-separated as GLUE writes it, quotes are text; True: CSV quoting


def _zstd_open(path: str, mode: str = "rb") -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        raise InputError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from None
    return zstandard.open(path, mode)


COMPRESSIONS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": _zstd_open}
READERS: Registry[Callable[[str, ReadOptions], Iterator[Record]]] = Registry("input format")


def split_suffix(path: str) -> tuple[str, Optional[str]]:
    """('.jsonl', '.gz') for 'a/b.jsonl.gz'; the format suffix is lower-cased."""
    name = os.path.basename(path).lower()
    comp = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    if comp:
        name = name[: -len(comp)]
    return os.path.splitext(name)[1], comp


def formats() -> str:
    """The readable formats, for messages: '.csv, .json, ... (optionally .gz, .bz2, ...)'."""
    return f"{', '.join(READERS.choices)} (optionally {', '.join(COMPRESSIONS)})"


def is_supported(path: str) -> bool:
    return split_suffix(path)[0] in READERS.choices


def open_binary(path: str) -> IO[bytes]:
    _, comp = split_suffix(path)
    return COMPRESSIONS[comp](path, "rb") if comp else open(path, "rb")


def lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without its terminator); decompression errors become InputError."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark is not text
                yield lineno, raw.rstrip(b"\n").rstrip(b"\r")
    except (OSError, EOFError, lzma.LZMAError) as e:  # truncated/corrupt archive, unreadable file
        raise InputError(f"{path}:{lineno + 1}: cannot read: {e}") from None


def decode(raw: bytes, path: str, lineno: int, errors: str = "strict") -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as e:
        if errors == "replace":
            return raw.decode("utf-8", errors="replace"), True
        raise InputError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                         "pass --errors replace to substitute U+FFFD") from None


def read_records(path: str, opts: Optional[ReadOptions] = None) -> Iterator[Record]:
    """Every record of one file, in file order."""
    opts = opts or ReadOptions()
    if opts.errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {opts.errors!r}")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    fmt, _ = split_suffix(path)
    if fmt not in READERS.choices:
        raise InputError(f"{path}: unsupported input type '{fmt}' (expected {formats()})")
    return READERS.get(fmt)(path, opts)


@READERS.register(".txt")
@READERS.register(".text")
def _read_txt(path: str, opts: ReadOptions) -> Iterator[Record]:
    for lineno, raw in lines(path):
        text, replaced = decode(raw, path, lineno, opts.errors)
        yield Record(lineno, text, replaced)


def _json_object(obj: Any, path: str, line: int) -> dict:
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
    return obj


@READERS.register(".jsonl")
@READERS.register(".ndjson")
def _read_jsonl(path: str, opts: ReadOptions) -> Iterator[Record]:
    for lineno, raw in lines(path):
        if not raw.strip():
            continue  # blank separator lines hold no record
        text, replaced = decode(raw, path, lineno, opts.errors)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
        yield Record(lineno, _json_object(obj, path, lineno), replaced)


@READERS.register(".json")
def _read_json(path: str, opts: ReadOptions) -> Iterator[Record]:
    """A JSON array of objects, or JSON lines under a .json name."""
    with open_binary(path) as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from _read_jsonl(path, opts)
        return
    text, replaced = decode(b"\n".join(raw for _, raw in lines(path)), path, 1, opts.errors)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed JSON: {e.msg} at column {e.colno}") from None
    for i, obj in enumerate(items, 1):
        yield Record(i, _json_object(obj, path, i), replaced)


def _decoded_lines(path: str, opts: ReadOptions, state: dict) -> Iterator[str]:
    for lineno, raw in lines(path):
        state["line"] = lineno
        text, replaced = decode(raw, path, lineno, opts.errors)
        state["replaced"] |= replaced
        yield text + "\n"


def _read_delimited(path: str, opts: ReadOptions, delimiter: str, quoting: bool) -> Iterator[Record]:
    state = {"line": 0, "replaced": False}
    kw = {} if quoting else {"quoting": csv.QUOTE_NONE}
    reader = csv.reader(_decoded_lines(path, opts, state), delimiter=delimiter, **kw)
    header: Optional[list[str]] = None
    start = 1
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                start = state["line"] + 1
                continue
            if header is None:
                header = [h.strip() for h in row]
                dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
                if dup is not None:
                    raise InputError(f"{path}:{start}: column '{dup}' appears twice in the header")
            elif len(row) != len(header):
                raise InputError(f"{path}:{start}: {len(row)} fields, the header has {len(header)}")
            else:
                yield Record(start, dict(zip(header, row)), state["replaced"])
            start = state["line"] + 1
    except csv.Error as e:
        raise InputError(f"{path}:{state['line']}: malformed {'CSV' if delimiter == ',' else 'TSV'}: {e}") from None


@READERS.register(".csv")
def _read_csv(path: str, opts: ReadOptions) -> Iterator[Record]:
    """Comma-separated with a header row and CSV quoting (fields may span lines)."""
    return _read_delimited(path, opts, ",", True)


@READERS.register(".tsv")
def _read_tsv(path: str, opts: ReadOptions) -> Iterator[Record]:
    """Tab-separated with a header row; by default as GLUE writes it (no quoting: quotes are text)."""
    return _read_delimited(path, opts, "\t", opts.tsv_quoting)


@READERS.register(".parquet")
def _read_parquet(path: str, opts: ReadOptions) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        source: Any = path
        if split_suffix(path)[1]:  # parquet needs random access: decompress the outer wrapper into memory
            with open_binary(path) as f:
                source = io.BytesIO(f.read())
        pf = pq.ParquetFile(source)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise InputError(f"{path}: cannot read parquet: {str(e).splitlines()[0]}") from None
    names = pf.schema_arrow.names
    columns = [c for c in opts.columns or names if c in names] or names
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield Record(row, rec)
