"""Tokenize text documents into MDS shards that ``StreamingDataset`` reads (library behind
``data_prep/tokenize_to_mds.py``).

The folder's layout and sample schema are the shard writer's (flexbert/data/shard_writer.py).
Every document is encoded
through the tokenizer's post-processor (``[CLS] ... [SEP]``); documents longer than
``max_seq_len`` are split into chunks that are each wrapped the same way (or truncated to the
first chunk when asked).  Which split a document lands in is decided by a hash of its text, so it
does not depend on the order of files, the number of workers or the machine.

Tokenization runs in worker processes; the main process reads inputs and writes shards in input
order, so the output is byte-identical for any number of workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from flexbert.data.outputs import OutputError, prepare_output_dir  # noqa: F401 - OutputError: re-exported
from flexbert.data.ragged import wrapped_chunks
from flexbert.data.remote import check_writable, is_remote, join, upload_tree
from flexbert.data.shard_stats import SPLITS, ShardStats
from flexbert.data.shard_writer import ShardWriter, id_dtype
from flexbert.data.sources import InputError, expand_inputs, iter_documents
from flexbert.data.tokenizer import load_tokenizer, special_tokens_template


@dataclass
class ShardOptions:
    max_seq_len: int
    val_fraction: float = 0.01  # share of documents (by text hash) sent to validation
    workers: int = 1
    overwrite: bool = False
    field: str = "text"  # JSONL field / parquet column
    txt_mode: str = "line"  # "line": a document per line; "paragraph": per blank-line paragraph
    errors: str = "strict"  # "replace": substitute U+FFFD for invalid UTF-8 instead of failing
    truncate: bool = False  # keep only the first chunk of long documents
    size_limit: str = "64mb"  # shard size
    compression: str | None = None  # e.g. "zstd"
    progress: bool = True
    task_chars: int = 1 << 20  # text per worker task

    def validate(self) -> None:
        if self.max_seq_len < 4:
            raise ValueError(f"max_seq_len must be >= 4, got {self.max_seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


# --------------------------------------------------------------------------- worker side
_W: dict = {}  # per-process tokenizer state, set by _init_worker


def _init_worker(tokenizer_dir: str, max_seq_len: int, truncate: bool, val_fraction: float, tok=None) -> None:
    tok = tok or load_tokenizer(tokenizer_dir)  # a 50k BPE takes ~0.3 s to parse: reuse when in-process
    pre, post = special_tokens_template(tok)
    cap = max_seq_len - len(pre) - len(post)
    if cap < 1:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room next to the special tokens")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    _W.update(
        tok=tok,
        pre=np.array(pre, np.int64),
        post=np.array(post, np.int64),
        cap=cap,
        truncate=truncate,
        val_fraction=val_fraction,
        dtype=np.dtype(id_dtype(vocab)),
    )


def in_validation(text: str, val_fraction: float) -> bool:
    """Deterministic split: a document goes to validation iff a hash of its text falls below the fraction."""
    if val_fraction <= 0:
        return False
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") < val_fraction * 2.0**64


def _encode_task(task: tuple[list[str], list[int]]) -> tuple[np.ndarray, list[tuple[int, list[int], int]]]:
    """Encode one batch of documents.

    ``task`` = (texts, forced split per text: -1 = decide by hash, 0 = train, 1 = validation).
    Returns (all chunk ids concatenated, per document (split, chunk lengths, dropped tokens)).
    An empty chunk list means the document produced no tokens.
    """
    texts, forced = task
    tok, pre, post, cap = _W["tok"], _W["pre"], _W["post"], _W["cap"]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # fast: skips offsets
    encs = encode(texts, add_special_tokens=True)
    pieces, meta = [], []
    npre, npost = len(pre), len(post)
    for text, f, enc in zip(texts, forced, encs):
        ids = np.asarray(enc.ids, dtype=np.int64)
        body = ids[npre : len(ids) - npost]
        split = f if f >= 0 else int(in_validation(text, _W["val_fraction"]))
        if len(body) == 0:
            meta.append((split, [], 0))
            continue
        dropped = 0
        if _W["truncate"] and len(body) > cap:
            dropped, body = len(body) - cap, body[:cap]
        chunks = wrapped_chunks(body, cap, pre, post)
        pieces += chunks
        meta.append((split, [len(c) for c in chunks], dropped))
    flat = np.concatenate(pieces).astype(_W["dtype"]) if pieces else np.zeros(0, _W["dtype"])
    return flat, meta


# --------------------------------------------------------------------------- main side
def _tasks(files: list[tuple[str, int]], opts: ShardOptions, stats: ShardStats) -> Iterator[tuple[list[str], list[int]]]:
    """Batches of non-empty texts for the workers; empty documents are counted here."""
    texts: list[str] = []
    forced: list[int] = []
    size = 0
    for path, force in files:
        n = 0
        for doc in iter_documents(path, field=opts.field, txt_mode=opts.txt_mode, errors=opts.errors):
            n += 1
            stats.documents_read += 1
            stats.documents_with_replaced_bytes += doc.replaced
            if not doc.text.strip():
                stats.skipped["empty"] += 1
                continue
            texts.append(doc.text)
            forced.append(force)
            size += len(doc.text)
            if size >= opts.task_chars:
                yield texts, forced
                texts, forced, size = [], [], 0
        stats.inputs.append({"path": path, "split": "auto" if force < 0 else SPLITS[force], "documents": n})
    if texts:
        yield texts, forced


def _results(tasks: Iterable, tokenizer_dir: str, opts: ShardOptions, tok=None) -> Iterator:
    """Encoded tasks, in order.  Workers > 1: a process pool with a bounded number of tasks in
    flight (Pool.imap would read the whole input ahead into memory)."""
    init_args = (tokenizer_dir, opts.max_seq_len, opts.truncate, opts.val_fraction)
    if opts.workers == 1:
        _init_worker(*init_args, tok=tok)
        for t in tasks:
            yield _encode_task(t)
        return
    # Workers come from a forkserver (a clean process that has imported this module), not forked
    # from this one: here a progress bar's monitor, torch's or a test runner's threads may hold a
    # lock at the moment of a fork, and the child then waits on it forever (a test's pool hung so).
    methods = mp.get_all_start_methods()
    method = "forkserver" if "forkserver" in methods else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    # each worker is one core: keep the Rust tokenizer from spawning its own thread pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with ctx.Pool(opts.workers, initializer=_init_worker, initargs=init_args) as pool:
        pending: deque = deque()
        for t in tasks:
            pending.append(pool.apply_async(_encode_task, (t,)))
            if len(pending) >= 2 * opts.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _write(results: Iterable, writer: ShardWriter, opts: ShardOptions, stats: ShardStats) -> None:
    """Encoded documents -> the shard writer, one split per document as decided by the workers."""
    bar = None
    if opts.progress:
        bar = tqdm(unit=" docs", desc="tokenize", dynamic_ncols=True, mininterval=0.5)
    try:
        for flat, meta in results:
            pos = 0
            for split, lengths, dropped in meta:
                if not lengths:
                    stats.skipped["no_tokens"] += 1
                    continue
                n = sum(lengths)
                writer.write(SPLITS[split], flat[pos: pos + n], lengths)
                pos += n
                stats.add(SPLITS[split], lengths, dropped)
            if bar is not None:
                bar.update(len(meta))
                bar.set_postfix(tokens=stats.tokens(), refresh=False)
    finally:
        if bar is not None:
            bar.close()


def tokenize_to_mds(
    inputs: list[str], tokenizer_dir: str, out: str, opts: ShardOptions, val_inputs: list[str] | None = None,
    *, remote: str | None = None,
) -> dict:
    """Write MDS shards + stats.json; returns the stats.  Raises InputError / OutputError / StoreError.

    ``out`` may be a URL (``s3://bucket/prefix``): shards are uploaded by Streaming's writer as each
    one is finished (local disk holds a shard or two, not the data set), then the tokenizer and,
    last, stats.json (its presence marks a complete upload)."""
    opts.validate()
    if is_remote(out):
        check_writable(out, opts.overwrite)  # unreachable store / existing data: fail before tokenizing
        staging = tempfile.mkdtemp(prefix="flexbert-mds-")
        try:
            stats = tokenize_to_mds(inputs, tokenizer_dir, staging, opts, val_inputs, remote=out)
            upload_tree(os.path.join(staging, "tokenizer"), join(out, "tokenizer"))
            upload_tree(staging, out, only=["stats.json"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return stats
    t0 = time.time()
    tok = load_tokenizer(tokenizer_dir)
    files = [(p, -1) for p in expand_inputs(inputs)] + [(p, 1) for p in expand_inputs(val_inputs or [])]
    if not files:
        raise InputError("no input files given")
    prepare_output_dir(out, overwrite=opts.overwrite, inputs=[p for p, _ in files] + [tokenizer_dir])

    stats = ShardStats()
    with ShardWriter(out, tokenizer_dir, tok, size_limit=opts.size_limit, compression=opts.compression,
                     remote=remote) as writer:
        _write(_results(_tasks(files, opts, stats), tokenizer_dir, opts, tok), writer, opts, stats)
        if stats.documents_written == 0:
            raise InputError(
                f"no documents to write: {len(files)} input file(s), {stats.documents_read} document(s) read, "
                f"all empty ({stats.skipped['empty']} empty, {stats.skipped['no_tokens']} without tokens)"
            )
        return writer.finish(stats.report(opts, writer.special, writer.dtype, time.time() - t0))
