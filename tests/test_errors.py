"""docs/errors.md is the table of refused inputs; this file runs every row of it.

Each row names a command, the input it refuses, the one line it prints and the fix.  ``CASES`` builds
that input in an empty folder (relative paths, so the line in the table is the line printed) and
``test_each_refused_input_is_the_line_in_the_table`` runs the command in-process: exit code 2, exactly
that line on stderr (no traceback, nothing else), and nothing written or changed in the folder.  A
row without a case, or a case without a row, fails ``test_the_table_and_the_cases_are_the_same``:
the table cannot drift from what the commands print.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from data_fixtures.helpers import small_tokenizer_dir
from flexbert.cli.main import main
from test_train_fixtures import ROOT, model_overrides

DOC = Path(ROOT) / "docs" / "errors.md"
TINY = os.path.join(ROOT, "configs", "tiny.yaml")


# --------------------------------------------------------------------------- inputs, written in the cwd
def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def jsonl(path: str, rows: list[dict]) -> str:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


DOCS = [("d1", "apple banana"), ("d2", "cherry kiwi"), ("d3", "grape melon")]
QUERIES = [("q1", "apple"), ("q2", "cherry")]


def beir(docs=DOCS, queries=QUERIES, qrels=(("q1", "d1", 1), ("q2", "d2", 1)), folder="beir") -> str:
    jsonl(f"{folder}/corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in docs])
    jsonl(f"{folder}/queries.jsonl", [{"_id": i, "text": t} for i, t in queries])
    write(f"{folder}/qrels/test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return folder


def pairs(rows: list[tuple], path: str = "pairs.jsonl") -> str:
    return jsonl(path, [{"query": q, "positive": p} for q, p in rows])


DISTINCT = [(f"query {i}", f"passage {i}") for i in range(8)]


def task(path: str = "task.jsonl") -> str:
    return jsonl(path, [{"text": f"text {i}", "label": i % 2} for i in range(4)])


def link(models: Path, name: str, as_: str = "model") -> str:
    os.symlink(models / name, as_)
    return as_


def finetune(models, *extra) -> list[str]:
    return ["finetune", "--model", link(models, "enc"), "--train", task(), "--validation", "task.jsonl",
            "--text-columns", "text", "--out", "out", *extra]


def merge(models, *extra, method="linear") -> list[str]:
    link(models, "enc", "a")
    link(models, "enc1", "b")
    return ["merge", "--method", method, "--models", "a", "b", "--out", "out", *extra]


def retrieval_ft(models, train: str, *extra) -> list[str]:
    return ["finetune-retrieval", "--model", link(models, "enc"), "--train", train, "--out", "out", "--no-progress", *extra]


def run_folder(config: str) -> str:
    write("run/config.yaml", config)
    return "run"


# --------------------------------------------------------------------------- the cases (one per table row)
@dataclass
class Case:
    command: str
    input: str
    build: Callable[[Path], list[str]]  # models folder -> argv (after writing its inputs in the cwd)


CASES = [
    Case("eval-retrieval", "qrels that name only queries and documents the folder lacks", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(qrels=[("q1", "x1", 1), ("q2", "x2", 1), ("q9", "d1", 1)])]),
    Case("eval-retrieval", "a blank query", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(queries=[("q1", "apple"), ("q2", "  ")])]),
    Case("eval-retrieval", "a blank document", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(docs=DOCS + [("d4", "")])]),
    Case("eval-retrieval", "a corpus _id twice", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(docs=DOCS + [("d2", "another text")])]),
    Case("eval-retrieval", "a qrels score that is not a number", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(qrels=[("q1", "d1", "high")])]),
    Case("eval-retrieval", "qrels with no score above 0", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(qrels=[("q1", "d1", 0)])]),
    Case("eval-retrieval", "a folder without the split's qrels file", lambda m: [
        "eval-retrieval", "--bm25", "--data", beir(), "--split", "dev"]),
    Case("eval-retrieval", "a truncated model.safetensors", lambda m: [
        "eval-retrieval", "--model", link(m, "trunc"), "--data", beir()]),
    Case("eval-retrieval", "--batch-size 0", lambda m: ["eval-retrieval", "--bm25", "--data", beir(), "--batch-size", "0"]),
    Case("finetune-retrieval", "pairs that all share one positive", lambda m: retrieval_ft(
        m, pairs([(f"query {i}", "the one passage") for i in range(16)]), "--batch-size", "8")),
    Case("finetune-retrieval", "copies of one pair", lambda m: retrieval_ft(m, pairs([("a query", "a passage")] * 4))),
    Case("finetune-retrieval", "a blank positive", lambda m: retrieval_ft(m, pairs(DISTINCT[:3] + [("query 9", " ")]))),
    Case("finetune-retrieval", "a row without the query column", lambda m: retrieval_ft(
        m, jsonl("pairs.jsonl", [{"question": "q", "positive": "p"}]))),
    Case("finetune-retrieval", "a single pair", lambda m: retrieval_ft(m, pairs(DISTINCT[:1]))),
    Case("finetune-retrieval", "--lr nan", lambda m: retrieval_ft(m, pairs(DISTINCT), "--lr", "nan")),
    Case("finetune-retrieval", "--eval folder whose qrels name only missing documents", lambda m: retrieval_ft(
        m, pairs(DISTINCT), "--eval", beir(qrels=[("q1", "x1", 1)]))),
    Case("finetune-retrieval", "a truncated model.safetensors", lambda m: [
        "finetune-retrieval", "--model", link(m, "trunc"), "--train", pairs(DISTINCT), "--out", "out"]),
    Case("merge", "--weights nan 1", lambda m: merge(m, "--weights", "nan", "1")),
    Case("merge", "--scale inf", lambda m: merge(m, "--scale", "inf", "--base", "a", method="task_arithmetic")),
    Case("merge", "--density 0", lambda m: merge(m, "--density", "0", "--base", "a", method="ties")),
    Case("merge", "--weights that sum to 0", lambda m: merge(m, "--weights", "1", "-1")),
    Case("merge", "ties without --base", lambda m: merge(m, method="ties")),
    Case("merge", "a merge that overflows float32", lambda m: merge(m, "--scale", "1e39", "--base", "a",
                                                                    method="task_arithmetic")),
    Case("merge", "models of different sizes", lambda m: [
        "merge", "--method", "linear", "--models", link(m, "enc", "a"), link(m, "wide", "b"), "--out", "out"]),
    Case("merge", "a truncated model.safetensors", lambda m: [
        "merge", "--method", "linear", "--models", link(m, "enc", "a"), link(m, "trunc", "b"), "--out", "out"]),
    Case("merge", "a non-empty --out", lambda m: merge(m) if write("out/notes.txt", "mine") else []),
    Case("tile", "a truncated model.safetensors", lambda m: [
        "tile", "--from", link(m, "trunc"), "--config", TINY, "--out", "out"]),
    Case("finetune", "--max-seq-len 1", lambda m: finetune(m, "--max-seq-len", "1")),
    Case("finetune", "--max-seq-len 4 with two text columns", lambda m: finetune(
        m, "--text-columns", "premise", "hypothesis", "--max-seq-len", "4")),
    Case("finetune", "--lr inf", lambda m: finetune(m, "--lr", "inf")),
    Case("finetune", "--warmup 1.5", lambda m: finetune(m, "--warmup", "1.5")),
    Case("finetune", "a truncated model.safetensors", lambda m: [
        "finetune", "--model", link(m, "trunc"), "--train", task(), "--validation", "task.jsonl", "--text-columns", "text",
        "--out", "out"]),
    Case("train-tokenizer", "--vocab-size 10", lambda m: [
        "train-tokenizer", "bpe", "--input", write("corpus.txt", "some text\n"), "--vocab-size", "10", "--out", "tok"]),
    Case("train-tokenizer", "a corpus with no text", lambda m: [
        "train-tokenizer", "bpe", "--input", write("corpus.txt", "\n  \n"), "--out", "tok"]),
    Case("train-tokenizer", "a file that is not gpt2.tiktoken", lambda m: [
        "train-tokenizer", "modernbert", "--tiktoken", write("gpt2.tiktoken", "hello\n"), "--out", "tok"]),
    Case("synthetic-shards", "--val-fraction inf", lambda m: [
        "synthetic-shards", "--tokenizer", "tok", "--out", "out", "--documents", "3", "--val-fraction", "inf"]),
    Case("train", "a float key set to .nan", lambda m: ["train", TINY, "optimizer.lr=.nan", "run_dir=run"]),
    Case("eval-mlm", "--mlm-probability 1.5", lambda m: [
        "eval-mlm", "--model", link(m, "enc"), "--data", "shards", "--mlm-probability", "1.5"]),
    Case("tokenize", "--val-fraction 1", lambda m: [
        "tokenize", "--input", write("corpus.txt", "text\n"), "--tokenizer", "tok", "--out", "out", "--max-seq-len", "64",
        "--val-fraction", "1"]),
    Case("average", "a file that is not a checkpoint", lambda m: ["average", write("ba1.pt", "not a checkpoint"), "--out", "avg"]),
    Case("diagnose", "a path that does not exist", lambda m: ["diagnose", "runs/nope"]),
    Case("diagnose", "an unparsable config.yaml", lambda m: ["diagnose", run_folder("model: {hidden_size: 64\n")]),
    Case("diagnose", "a config.yaml with an unknown key", lambda m: ["diagnose", run_folder("modle: {}\n")]),
    Case("export", "a --run-dir that does not exist", lambda m: ["export", "--run-dir", "runs/nope", "--out", "hf"]),
]


# --------------------------------------------------------------------------- the table
def table() -> dict[tuple[str, str], tuple[str, str]]:
    """(command, input) -> (message, fix) of every row of docs/errors.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0].startswith("`flexbert "):
            command, what, message, fix = (c.strip("`").strip() for c in cells)
            rows[(command.removeprefix("flexbert "), what)] = (message, fix)
    return rows


def snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.is_dir(), os.readlink(p) if p.is_symlink() else None,
                                         None if p.is_dir() or p.is_symlink() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Tiny sentence-transformers folders (FlexBERT exports): two of one size, one wider, one truncated."""
    from flexbert.convert.hf import to_hf
    from flexbert.convert.sentence import write_sentence_transformers
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig

    tok = os.path.join(small_tokenizer_dir(tmp_path_factory), "tokenizer.json")
    root = tmp_path_factory.mktemp("models")
    for name, seed, hidden in (("enc", 0, 32), ("enc1", 1, 32), ("wide", 0, 64)):
        torch.manual_seed(seed)
        cfg = FlexBertConfig.from_dict(model_overrides(vocab=512, hidden=hidden, attn_out_dropout=0.0))
        to_hf(FlexBertForMaskedLM(cfg).eval(), root / name, tokenizer=tok)
        write_sentence_transformers(str(root / name), hidden, 64, "mean")
    shutil.copytree(root / "enc", root / "trunc")
    weights = root / "trunc" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    shutil.copytree(os.path.dirname(tok), root / "tok")
    return root


def test_the_table_and_the_cases_are_the_same():
    rows = table()
    cases = [(c.command, c.input) for c in CASES]
    assert len(set(cases)) == len(cases)
    assert sorted(cases) == sorted(rows), (set(cases) ^ set(rows))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}: {c.input}")
def test_each_refused_input_is_the_line_in_the_table(case, models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if case.command == "synthetic-shards":
        os.symlink(models / "tok", "tok")
    argv = case.build(models)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses a flag by exiting
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    message = table().get((case.command, case.input), ("(no row in docs/errors.md)", ""))[0]
    assert (code, lines) == (2, [message]), err
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
