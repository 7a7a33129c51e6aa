#!/usr/bin/env python
"""Data-pipeline benchmark (issue 3); figures recorded in docs/benchmarks.md.

    python scripts/bench_data.py [--text data/demo/pretrain/train.jsonl] [--tokenizer DIR] [--quick]

(a) tokenize-to-MDS tokens/s with 1 and 2 workers against raw ``tokenizers`` batch encoding of the
    same text (goal: ratio >= 0.8, i.e. reading + chunking + shard writing cost < 20%);
(b) packer + MLM masking tokens/s on one core (goal >= 2M tokens/s), and the whole loader reading
    the shards through Streaming;
(c) packing efficiency on the paper's variable-length sets: 8,192 documents ~ N(256, 64) clamped
    [16, 512] at max_seq_len 512, and ~ N(4096, 1024) clamped [16, 8192] at 8192.

Each tokenizer measurement runs in a fresh process so thread settings are clean: "1 thread" runs
set TOKENIZERS_PARALLELISM=false; the 2-worker pipeline runs two such single-threaded processes;
"all threads" lets the Rust tokenizer use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- child measurements
def _texts(path: str) -> list[str]:
    from flexbert.data.sources import iter_documents

    return [d.text for d in iter_documents(path) if d.text.strip()]


def measure_raw(text_path: str, tok_dir: str) -> dict:
    """Raw tokenizers batch encoding, same batches as the pipeline's worker tasks (~1 MB of text)."""
    from flexbert.data.tokenizer import load_tokenizer

    texts = _texts(text_path)
    tok = load_tokenizer(tok_dir)
    batches, cur, size = [], [], 0
    for t in texts:
        cur.append(t)
        size += len(t)
        if size >= 1 << 20:
            batches.append(cur)
            cur, size = [], 0
    batches.append(cur)
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        n += sum(len(e.ids) for e in tok.encode_batch_fast(b, add_special_tokens=True))
    dt = time.perf_counter() - t0
    return {"tokens": n, "seconds": dt, "tokens_per_s": n / dt}


def measure_pipeline(text_path: str, tok_dir: str, workers: int, seq_len: int) -> dict:
    import streaming  # noqa: F401  (a one-off import cost, ~4 s here: not per token)

    from flexbert.data.shards import ShardOptions, tokenize_to_mds

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        s = tokenize_to_mds([text_path], tok_dir, out, ShardOptions(max_seq_len=seq_len, workers=workers, progress=False))
        dt = time.perf_counter() - t0
    return {"tokens": s["tokens_written"], "seconds": dt, "tokens_per_s": s["tokens_written"] / dt}


def _child(kind: str, *args, parallel: bool = False, repeats: int = 3) -> dict:
    """Best of ``repeats`` fresh processes (shared 2-core machines are noisy: +-30% run to run)."""
    env = dict(os.environ)
    env["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, *map(str, args)]
    runs = []
    for _ in range(repeats):
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    best = max(runs, key=lambda r: r["tokens_per_s"])
    best["all_tokens_per_s"] = [round(r["tokens_per_s"]) for r in runs]
    return best


# --------------------------------------------------------------------------- (b) and (c)
def lengths(n: int, mean: float, std: float, lo: int, hi: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(mean, std, n)), lo, hi).astype(int)


def pack_and_mask(lens, row_tokens: int, max_seq_len: int, buffer: int, special, mask: bool = True) -> dict:
    """Best-fit packing (+ masking) of documents with the given lengths; tokens/s and efficiency."""
    import numpy as np

    from flexbert.data.masking import MLMMasker
    from flexbert.data.packing import BestFitPacker, make_row

    rng = np.random.default_rng(1)
    pool = special.replacement_ids()
    docs = [rng.choice(pool, n) for n in lens]
    masker = MLMMasker(special, 0.30, seed=0)
    packer = BestFitPacker(row_tokens, max_seq_len, buffer)
    src = iter(enumerate(docs))

    def fill():
        while not packer.full():
            nxt = next(src, None)
            if nxt is None:
                return
            packer.add(nxt[1], nxt[0])

    t0 = time.perf_counter()
    rows = used = 0
    while True:
        fill()
        got = packer.pop_row(refill=fill)
        if not got:
            break
        row = make_row(got, row_tokens, max_seq_len, special.pad_id)
        if mask:
            masker(row["input_ids"], rows)
        rows += 1
        used += row["num_tokens"]
    dt = time.perf_counter() - t0
    return {"rows": rows, "tokens": used, "tokens_per_s": used / dt, "efficiency": used / (rows * row_tokens)}


def loader_rate(text_path: str, tok_dir: str, seq_len: int, microbatch: int) -> dict:
    """The whole training loader (Streaming read + pack + mask) over freshly written shards, one epoch."""
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.data.config import DataConfig
    from flexbert.data.loader import build_train_loader
    from flexbert.data.shards import ShardOptions, tokenize_to_mds

    with tempfile.TemporaryDirectory() as out:
        tokenize_to_mds([text_path], tok_dir, out, ShardOptions(max_seq_len=seq_len, workers=2, progress=False, val_fraction=0.0))
        res = {}
        for workers in (0, 1):
            clean_stale_shared_memory()
            cfg = DataConfig.from_dict({"local": out, "tokenizer": tok_dir, "max_seq_len": seq_len,
                                        "microbatch_size": microbatch, "num_workers": workers, "epochs": 1})
            loader = build_train_loader(cfg)
            t0 = time.perf_counter()
            for _ in loader:
                pass
            dt = time.perf_counter() - t0
            res[workers] = {"tokens": loader.real_tokens, "tokens_per_s": loader.real_tokens / dt,
                            "efficiency": loader.real_tokens / (loader.rows_global * cfg.row_tokens)}
            del loader
        return res


# --------------------------------------------------------------------------- main
def ensure_inputs(args) -> tuple[str, str]:
    text = args.text or os.path.join(REPO, "data", "demo", "pretrain", "train.jsonl")
    if not os.path.exists(text):
        subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "fetch_demo_corpus.py")], check=True)
    tok = args.tokenizer
    if tok is None:
        tok = os.path.join(REPO, "runs", "bench", "tok-modernbert")
        if not os.path.exists(os.path.join(tok, "tokenizer.json")):
            subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "train_tokenizer.py"), "modernbert",
                            "--out", tok], check=True)
    return text, tok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text", default=None, help="JSONL/txt corpus (default: the demo corpus, fetched if needed)")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the 50,368-token ModernBERT layout)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kind, *rest = a.child
        fn = {"raw": lambda: measure_raw(rest[0], rest[1]),
              "pipeline": lambda: measure_pipeline(rest[0], rest[1], int(rest[2]), int(rest[3]))}[kind]
        print(json.dumps(fn()))
        return 0

    from flexbert.data.tokenizer import SpecialTokens

    text, tok = ensure_inputs(a)
    special = SpecialTokens.from_dir(tok)
    results: dict = {"text": os.path.relpath(text, REPO), "tokenizer_vocab": special.vocab_size}

    print("(a) tokenize to MDS vs raw tokenizers batch encoding", flush=True)
    raw1 = _child("raw", text, tok)
    raw_all = _child("raw", text, tok, parallel=True)
    pipe1 = _child("pipeline", text, tok, 1, a.seq_len)
    pipe2 = _child("pipeline", text, tok, 2, a.seq_len)
    results["a"] = {"raw_1_thread": raw1, "raw_all_threads": raw_all, "pipeline_1_worker": pipe1, "pipeline_2_workers": pipe2}
    rows_a = [
        ("raw encode_batch_fast, 1 thread", raw1["tokens_per_s"], ""),
        ("raw encode_batch_fast, all threads", raw_all["tokens_per_s"], ""),
        ("tokenize_to_mds --workers 1", pipe1["tokens_per_s"], f"{pipe1['tokens_per_s'] / raw1['tokens_per_s']:.2f} of raw 1 thread"),
        ("tokenize_to_mds --workers 2", pipe2["tokens_per_s"], f"{pipe2['tokens_per_s'] / raw_all['tokens_per_s']:.2f} of raw all threads"),
    ]
    for name, rate, note in rows_a:
        print(f"  {name:40s} {rate / 1e6:7.3f} M tok/s  {note}")

    results.update(bench_packing(text, tok, a.seq_len, special))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def bench_packing(text: str, tok: str, seq_len: int, special) -> dict:
    """Parts (b) and (c): packer + masking rates, the whole loader, packing efficiency."""
    from flexbert.data.config import DataConfig

    results: dict = {}
    print("(b) packer + masking, one core", flush=True)
    buf = DataConfig(local="x").packer_buffer_size
    b_cases = {
        "N(256,64) docs, row 1x512": pack_and_mask(lengths(50_000, 256, 64, 16, 512), 512, 512, buf, special),
        "N(256,64) docs, row 96x1024 (base recipe)": pack_and_mask(lengths(50_000, 256, 64, 16, 512), 96 * 1024, 1024, buf, special),
        "N(4096,1024) docs, row 1x8192": pack_and_mask(lengths(4_000, 4096, 1024, 16, 8192), 8192, 8192, buf, special),
    }
    results["b"] = b_cases
    for name, r in b_cases.items():
        print(f"  {name:45s} {r['tokens_per_s'] / 1e6:7.2f} M tok/s")
    lr = loader_rate(text, tok, seq_len, 8)
    results["b_loader"] = lr
    for w, r in lr.items():
        print(f"  whole loader (Streaming + pack + mask), {w} workers, 8x{seq_len} rows: {r['tokens_per_s'] / 1e6:.2f} M tok/s")

    print(f"(c) packing efficiency, 8,192 documents, default buffer ({buf} documents)", flush=True)
    c_cases = {
        "N(256,64) [16,512] at 512": pack_and_mask(lengths(8192, 256, 64, 16, 512), 512, 512, buf, special, mask=False),
        "N(4096,1024) [16,8192] at 8192": pack_and_mask(lengths(8192, 4096, 1024, 16, 8192), 8192, 8192, buf, special, mask=False),
    }
    results["c"] = c_cases
    for name, r in c_cases.items():
        print(f"  {name:35s} {100 * r['efficiency']:6.2f} %  ({r['rows']} rows)")
    return results


if __name__ == "__main__":
    sys.exit(main())
