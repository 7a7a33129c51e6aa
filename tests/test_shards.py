"""Text -> MDS shards: round trip, chunking, counts that add up, hostile inputs, the CLI contract."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_fixtures.helpers import clean_shm, sentences, small_tokenizer_dir
from flexbert.data.shard_stats import check_stats
from flexbert.data.shards import OutputError, ShardOptions, tokenize_to_mds
from flexbert.data.sources import InputError
from flexbert.data.tokenizer import load_tokenizer, special_tokens_template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = 32


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return small_tokenizer_dir(tmp_path_factory)


def write_jsonl(path, texts, field="text"):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({field: t}) + "\n")
    return str(path)


def read_split(out, split):
    """All samples of a split in write order (the MDS reader, not the training loader)."""
    from streaming import StreamingDataset

    clean_shm()
    ds = StreamingDataset(local=out, split=split, shuffle=False, batch_size=1)
    samples = [ds[i] for i in range(ds.num_samples)]
    del ds
    return samples


def run(inputs, tok, out, **kw):
    kw.setdefault("progress", False)
    val = kw.pop("val_inputs", None)
    return tokenize_to_mds(inputs, tok, str(out), ShardOptions(max_seq_len=kw.pop("max_seq_len", L), **kw), val_inputs=val)


def test_round_trip_decodes_to_the_text(tmp_path, tok):
    texts = sentences(200, seed=9) + ["Ünïcödé façade — naïve café 😀 漢字", "  leading and trailing  ", " ".join(sentences(40, 2))]
    stats = run([write_jsonl(tmp_path / "a.jsonl", texts)], tok, tmp_path / "out", val_fraction=0.0)
    assert stats["dtype"] == "uint16" and stats["documents_written"] == len(texts)
    t = load_tokenizer(tok)
    pre, post = special_tokens_template(t)
    samples = read_split(str(tmp_path / "out"), "train")
    assert all(s["input_ids"].dtype == np.uint16 and s["length"] == len(s["input_ids"]) <= L for s in samples)
    pos = 0
    for text in texts:
        n_body = len(t.encode(text, add_special_tokens=False).ids)
        n_chunks = -(-n_body // (L - len(pre) - len(post)))
        chunks = samples[pos : pos + n_chunks]
        pos += n_chunks
        for c in chunks:  # every chunk is wrapped like a whole document: [CLS] ... [SEP]
            assert c["input_ids"][: len(pre)].tolist() == pre and c["input_ids"][len(c["input_ids"]) - len(post) :].tolist() == post
        body = np.concatenate([c["input_ids"][len(pre) : len(c["input_ids"]) - len(post)] for c in chunks])
        expected = t.normalizer.normalize_str(text) if t.normalizer else text
        assert t.decode(body.tolist(), skip_special_tokens=False) == expected
    assert pos == len(samples) == stats["samples_written"]
    assert stats["documents_chunked"] >= 1


def test_counts_add_up_and_splits_are_deterministic(tmp_path, tok):
    texts = sentences(400, seed=3)
    lines = texts[:100] + ["", "   "] + texts[100:]
    path = tmp_path / "a.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    j = write_jsonl(tmp_path / "b.jsonl", ["", "kept one", None])
    s1 = run([str(path), j], tok, tmp_path / "o1", val_fraction=0.2, workers=1)
    s2 = run([str(path), j], tok, tmp_path / "o2", val_fraction=0.2, workers=2)
    check_stats(s1)
    assert s1["documents_read"] == 402 + 3
    assert s1["documents_skipped"] == {"empty": 4, "no_tokens": 0}
    assert s1["documents_written"] == 401
    assert 40 < s1["splits"]["validation"]["documents"] < 120
    on_disk = json.load(open(tmp_path / "o1" / "stats.json"))
    assert on_disk["splits"] == s1["splits"]
    # the output does not depend on the number of workers: identical shard bytes
    for split in ("train", "validation"):
        names = sorted(os.listdir(tmp_path / "o1" / split))
        assert names == sorted(os.listdir(tmp_path / "o2" / split))
        for n in names:
            assert (tmp_path / "o1" / split / n).read_bytes() == (tmp_path / "o2" / split / n).read_bytes()
    assert os.path.isfile(tmp_path / "o1" / "tokenizer" / "tokenizer.json")


def test_compressed_paragraph_and_parquet_inputs(tmp_path, tok):
    paras = "first para line one\nline two\n\n\n\nsecond para\n\nthird\n"
    with gzip.open(tmp_path / "p.txt.gz", "wt", encoding="utf-8") as f:
        f.write(paras)
    with bz2.open(tmp_path / "q.jsonl.bz2", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": "from bz2"}) + "\n")
    s = run([str(tmp_path / "p.txt.gz")], tok, tmp_path / "o1", txt_mode="paragraph", val_fraction=0.0)
    assert s["documents_read"] == 3 and s["documents_written"] == 3
    s = run([str(tmp_path / "q.jsonl.bz2")], tok, tmp_path / "o2", field="body", val_fraction=0.0)
    assert s["documents_written"] == 1
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["parquet row one", None, "row three"]}), tmp_path / "r.parquet")
    s = run([str(tmp_path / "r.parquet")], tok, tmp_path / "o3", val_fraction=0.0)
    assert s["documents_read"] == 3 and s["documents_written"] == 2 and s["documents_skipped"]["empty"] == 1


def test_a_million_token_document_is_chunked_or_truncated(tmp_path, tok):
    t = load_tokenizer(tok)
    unit = "the city and the river were known. "
    per = len(t.encode(unit * 10, add_special_tokens=False).ids) / 10
    text = unit * int(1_050_000 / per)
    n_body = len(t.encode(text, add_special_tokens=False).ids)
    assert n_body >= 1_000_000
    j = write_jsonl(tmp_path / "big.jsonl", [text, "short one"])
    s = run([j], tok, tmp_path / "o", max_seq_len=512, val_fraction=0.0)
    assert s["samples_written"] == -(-n_body // 510) + 1 and s["documents_chunked"] == 1
    n_short = len(t.encode("short one", add_special_tokens=False).ids)
    assert s["tokens_written"] == n_body + n_short + 2 * s["samples_written"]
    j = write_jsonl(tmp_path / "long.jsonl", [unit * 400, "short one"])  # truncation needs no 1M tokens
    n_long = len(t.encode(unit * 400, add_special_tokens=False).ids)
    s = run([j], tok, tmp_path / "t", max_seq_len=512, val_fraction=0.0, truncate=True)
    assert s["samples_written"] == 2 and s["documents_truncated"] == 1 and s["tokens_truncated"] == n_long - 510


def test_hostile_inputs(tmp_path, tok):
    good = write_jsonl(tmp_path / "good.jsonl", ["fine text"])
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    s = run([str(empty), good], tok, tmp_path / "o1", val_fraction=0.0)  # an empty file is just empty
    assert s["inputs"][0]["documents"] == 0 and s["documents_written"] == 1

    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n\n")
    with pytest.raises(InputError, match="no documents to write.*4 document"):
        run([str(blank), str(empty)], tok, tmp_path / "o2")
    assert not os.path.exists(tmp_path / "o2" / "train")

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok line\nbad \xff\xfe bytes\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: invalid UTF-8.*--errors replace"):
        run([str(bad)], tok, tmp_path / "o3")
    s = run([str(bad)], tok, tmp_path / "o4", errors="replace", val_fraction=0.0)
    assert s["documents_with_replaced_bytes"] == 1 and s["documents_written"] == 2

    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"text": "a"}\n{"content": "b"}\n')
    with pytest.raises(InputError, match=r"missing\.jsonl:2: missing field 'text' \(keys: content\)"):
        run([str(missing)], tok, tmp_path / "o5")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n\n{"text": "b"\n')
    with pytest.raises(InputError, match=r"broken\.jsonl:3: malformed JSON"):
        run([str(broken)], tok, tmp_path / "o6")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"text": 5}\n')
    with pytest.raises(InputError, match=r"wrong\.jsonl:1: field 'text' is int"):
        run([str(wrong)], tok, tmp_path / "o7")
    with pytest.raises(InputError, match="no such file"):
        run([str(tmp_path / "nope.jsonl")], tok, tmp_path / "o8")
    with pytest.raises(InputError, match="unsupported input type"):
        (tmp_path / "x.docx").write_text("a")
        run([str(tmp_path / "x.docx")], tok, tmp_path / "o9")
    corrupt = tmp_path / "c.jsonl.gz"
    corrupt.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    with pytest.raises(InputError, match=r"c\.jsonl\.gz:\d+: cannot read"):
        run([str(corrupt)], tok, tmp_path / "o10")


def test_output_folder_rules(tmp_path, tok):
    good = write_jsonl(tmp_path / "g.jsonl", ["some text"])
    out = tmp_path / "out"
    run([good], tok, out, val_fraction=0.0)
    with pytest.raises(OutputError, match="not empty.*--overwrite"):
        run([good], tok, out)
    s = run([good], tok, out, overwrite=True, val_fraction=0.0)
    assert s["documents_written"] == 1


def test_cli_exit_code_2_with_one_line_naming_file_and_line(tmp_path, tok, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{oops\n')
    cmd = [sys.executable, os.path.join(REPO, "data_prep", "tokenize_to_mds.py"), "--input", str(broken),
           "--tokenizer", tok, "--out", str(tmp_path / "o"), "--max-seq-len", "64", "--workers", "1", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.jsonl:2: malformed JSON" in lines[0], r.stderr
    good = write_jsonl(tmp_path / "g.jsonl", sentences(50))
    cmd[cmd.index(str(broken))] = good
    from flexbert.cli.tokenize import main  # what the script runs; in this process (another costs ~12 s)

    capsys.readouterr()
    assert main(cmd[2:]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["documents_written"] == 50
