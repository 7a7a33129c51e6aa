"""The input reader registry (flexbert/data/readers.py): every format and compression reads the same
records, a CSV corpus tokenizes exactly like the same text in JSONL, and every bad file is one line
naming the file and line."""

import bz2
import csv
import gzip
import json
import lzma

import pytest

from flexbert.data.readers import READERS, InputError, ReadOptions, read_records
from test_shards import read_split, run, tok  # noqa: F401 (tok is a fixture)

TEXTS = ["first document, with a comma", 'a "quoted" one', "multi\nline text", "plain", ""]


def _write_csv(path, texts, delimiter=","):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", "text"])
        for i, t in enumerate(texts):
            w.writerow([i, t])
    return str(path)


def _write_jsonl(path, texts, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    return str(path)


def test_a_csv_corpus_tokenizes_like_the_same_text_in_jsonl(tmp_path, tok):  # noqa: F811
    a = run([_write_csv(tmp_path / "c.csv", TEXTS)], tok, tmp_path / "from_csv", val_fraction=0.0)
    b = run([_write_jsonl(tmp_path / "c.jsonl", TEXTS)], tok, tmp_path / "from_jsonl", val_fraction=0.0)
    assert a["documents_read"] == b["documents_read"] == len(TEXTS)
    got, want = read_split(str(tmp_path / "from_csv"), "train"), read_split(str(tmp_path / "from_jsonl"), "train")
    assert len(got) == len(TEXTS) - 1 and [list(x["input_ids"]) for x in got] == [list(x["input_ids"]) for x in want]


@pytest.mark.parametrize("name,opener", [("c.jsonl.gz", gzip.open), ("c.jsonl.bz2", bz2.open), ("c.jsonl.xz", lzma.open)])
def test_every_compression_reads_the_same_records(tmp_path, name, opener):
    plain = [r.value for r in read_records(_write_jsonl(tmp_path / "c.jsonl", TEXTS))]
    assert [r.value for r in read_records(_write_jsonl(tmp_path / name, TEXTS, opener))] == plain


def test_json_array_tsv_and_bom(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"text": t} for t in TEXTS]))
    assert [r.value["text"] for r in read_records(str(arr))] == TEXTS
    bom = tmp_path / "b.csv"
    bom.write_bytes(b"\xef\xbb\xbfsentence,label\nhi,1\n")
    assert [r.value for r in read_records(str(bom))] == [{"sentence": "hi", "label": "1"}]
    glue = tmp_path / "g.tsv"
    glue.write_text('s\tl\nsay "hi\t1\n')  # GLUE: quotes are text
    assert [r.value for r in read_records(str(glue))] == [{"s": 'say "hi', "l": "1"}]
    assert {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"} <= set(READERS.choices)


@pytest.mark.parametrize("name,content,message", [
    ("dup.csv", b"text,label,text\na,1,b\n", "{p}:1: column 'text' appears twice in the header"),
    ("latin.csv", b"text,label\nok,1\ncaf\xe9,0\n", "{p}:3: invalid UTF-8 (byte 0xe9 at column 4)"),
    ("short.csv", b"text,label\na,1\nb\n", "{p}:3: 1 fields, the header has 2"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "{p}:2: malformed JSON"),
    ("list.json", b'[{"text": "a"}, 3]', "{p}:2: expected a JSON object, got int"),
    ("x.docx", b"a", "{p}: unsupported input type '.docx' (expected .csv, "),
])
def test_bad_files_are_one_line_with_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        list(read_records(str(path)))
    assert str(e.value).startswith(message.format(p=path)) and "\n" not in str(e.value)


def test_invalid_utf8_can_be_replaced(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text\ncaf\xe9\n")
    [r] = read_records(str(path), ReadOptions(errors="replace"))
    assert r.value == {"text": "caf\ufffd"} and r.replaced
