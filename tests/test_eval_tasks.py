"""Task files: GLUE-layout TSV, CSV and JSONL with one or two text columns; one-line errors."""

import gzip
import json

import pytest

from flexbert.eval.tasks import LabelSpace, TaskFileError, load_task, read_rows

# GLUE's MRPC layout: tab-separated, header row, quotes are part of the text (no CSV quoting)
MRPC = ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t702876\t702977\tHe said \"yes\" today.\tToday he said \"yes\".\n"
        "0\t2108705\t2108831\tThe cat sat.\tStocks fell sharply.\n")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_glue_tsv_pairs(tmp_path):
    data, labels = load_task(write(tmp_path / "train.tsv", MRPC), ["#1 String", "#2 String"], "Quality")
    assert data.texts == [('He said "yes" today.', 'Today he said "yes".'), ("The cat sat.", "Stocks fell sharply.")]
    assert data.labels == [1, 0] and labels.names == ["0", "1"] and labels.num_labels == 2


def test_csv_single_column_string_labels(tmp_path):
    text = 'text,label\n"Fine, really fine.",positive\nAwful.,negative\nGood.,positive\n'
    data, labels = load_task(write(tmp_path / "t.csv", text), ["text"], "label")
    assert data.texts == [("Fine, really fine.",), ("Awful.",), ("Good.",)]  # the quoted comma stays in the text
    assert labels.names == ["negative", "positive"] and data.labels == [1, 0, 1]
    assert labels.id2label() == {0: "negative", 1: "positive"}


def test_jsonl_one_and_two_columns_and_gzip(tmp_path):
    rows = [{"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": 2, "idx": 0},
            {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0, "idx": 1},
            {"premise": "Kids play.", "hypothesis": "Children are outside.", "label": 1, "idx": 2}]
    path = tmp_path / "mnli.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    pair, labels = load_task(str(path), ["premise", "hypothesis"], "label")
    assert pair.texts[0] == ("A man sleeps.", "A man is awake.") and pair.labels == [2, 0, 1]
    assert labels.names == ["0", "1", "2"]
    single, _ = load_task(str(path), ["premise"], "label", labels)
    assert single.texts == [("A man sleeps.",), ("A dog runs.",), ("Kids play.",)]


def test_regression_labels(tmp_path):
    text = "sentence1\tsentence2\tscore\na\tb\t4.75\nc\td\t0\n"
    data, labels = load_task(write(tmp_path / "sts.tsv", text), ["sentence1", "sentence2"], "score", task="regression")
    assert data.labels == [4.75, 0.0] and labels.num_labels == 1


def test_validation_maps_to_training_labels(tmp_path):
    _, labels = load_task(write(tmp_path / "train.csv", "s,l\na,x\nb,y\n"), ["s"], "l")
    with pytest.raises(TaskFileError) as e:
        load_task(write(tmp_path / "dev.csv", "s,l\nc,z\n"), ["s"], "l", labels)
    assert str(e.value) == f"{tmp_path / 'dev.csv'}:2: column 'l': label 'z' is not one of the training labels ['x', 'y']"


def test_unlabelled_test_file(tmp_path):
    labels = LabelSpace("classification", ["0", "1"])
    data, _ = load_task(write(tmp_path / "test.tsv", "index\tsentence\n0\thello\n"), ["sentence"], "label", labels,
                        require_labels=False)
    assert data.labels is None and data.texts == [("hello",)]


@pytest.mark.parametrize("name,text,cols,label,task,message", [
    ("a.tsv", "sentence\tlabel\nhi\t1\n", ["sentence", "other"], "label", "classification",
     "{p}: text column 'other' not found; columns: sentence, label"),
    ("b.csv", "sentence,label\nhi,1\n", ["sentence"], "gold", "classification",
     "{p}: label column 'gold' not found; columns: sentence, label"),
    ("c.jsonl", "", ["sentence"], "label", "classification", "{p}: no examples (empty file, or a header row only)"),
    ("d.tsv", "sentence\tlabel\n", ["sentence"], "label", "classification", "{p}: no examples (empty file, or a header row only)"),
    ("e.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b", "label": 1}\n{"sentence": "c", "label": [1]}\n',
     ["sentence"], "label", "classification",
     "{p}:3: column 'label': unknown label type [1]; classification labels are ints or strings (use --task regression for real values)"),
    ("f.csv", "s,label\na,0.5\nb,1\nc,0\n", ["s"], "label", "classification",
     "{p}:2: column 'label': unknown label type '0.5'; classification labels are ints or strings (use --task regression for real values)"),
    ("g.csv", "s,score\na,high\n", ["s"], "score", "regression",
     "{p}:2: column 'score': 'high' is not a number (regression needs numeric labels)"),
    ("h.txt", "x", ["s"], "label", "classification", "{p}: unknown file type '.txt'; valid: .tsv (GLUE layout, header row), .csv, .jsonl, .json, .parquet (optionally compressed)"),
    ("i.tsv", "a\tb\n1\t2\t3\n", ["a"], "b", "classification", "{p}:2: 3 fields, the header has 2"),
    ("j.csv", "s,score\na,1.5\nb,nan\n", ["s"], "score", "regression",
     "{p}:3: column 'score': 'nan' is not a finite number (a regression label cannot be nan or inf)"),
    ("k.jsonl", '{"s": "a", "score": 1}\n{"s": "b", "score": Infinity}\n', ["s"], "score", "regression",
     "{p}:2: column 'score': inf is not a finite number (a regression label cannot be nan or inf)"),
    ("l.csv", "s,label,label\na,0,1\n", ["s"], "label", "classification", "{p}:1: column 'label' appears twice in the header"),
])
def test_bad_inputs_give_one_line(tmp_path, name, text, cols, label, task, message):
    path = write(tmp_path / name, text)
    with pytest.raises(TaskFileError) as e:
        load_task(path, cols, label, task=task)
    assert str(e.value) == message.format(p=path)
    assert "\n" not in str(e.value)


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffsentence,label\nhi,1\nho,0\n".encode("utf-8"))
    data, labels = load_task(str(path), ["sentence"], "label")
    assert data.texts == [("hi",), ("ho",)] and labels.names == ["0", "1"]


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"s\tlabel\nfine\t0\ncaf\xe9\t1\n")
    with pytest.raises(TaskFileError, match=rf"^{path}:3: invalid UTF-8 \(byte 0xe9 at column 4\)"):
        load_task(str(path), ["s"], "label")


def test_missing_file(tmp_path):
    with pytest.raises(TaskFileError, match="no such file"):
        read_rows(str(tmp_path / "nope.tsv"))
