"""Write MDS shards of synthetic documents with the ModernBERT paper's length distributions, for
benchmarks and GPU checks that need realistic shapes but no corpus (``make gpu-report``).

    flexbert synthetic-shards --tokenizer DIR --out DIR --lengths pretrain         --max-seq-len 1024 [--tokens 20M | --documents N] [--seed 0] [--val-fraction 0.01]

Length distributions (tokens per document, [CLS] and [SEP] included):

* ``pretrain``: lognormal with median 460 (sigma 1.0, so a long tail past 1024); documents longer
  than ``--max-seq-len`` are cut into chunks that are each wrapped in [CLS]/[SEP], as
  ``flexbert tokenize`` cuts real text;
* ``fixed512``, ``fixed8192``: every document exactly that long (the paper's inference sets);
* ``normal256``: N(256, 64) clamped to [16, 512]; ``normal4096``: N(4096, 1024) clamped to
  [16, 8192] (the paper's variable-length inference sets).

Token ids are drawn uniformly from the tokenizer's non-special vocabulary, wrapped with its own
[CLS]/[SEP] (any tokenizer with BERT special tokens).  The output has the layout of
``flexbert tokenize`` (OUT/train, OUT/validation, OUT/tokenizer, OUT/stats.json), so
``composer train.py CONFIG data.local=OUT`` trains on it.
"""

from __future__ import annotations

import numpy as np

from flexbert.data.outputs import prepare_output_dir
from flexbert.data.readers import InputError
from flexbert.data.shard_stats import SPLITS
from flexbert.data.shard_writer import ShardWriter
from flexbert.data.tokenizer import load_tokenizer, special_tokens_template

LENGTHS = ("pretrain", "fixed512", "fixed8192", "normal256", "normal4096")
PRETRAIN_MEDIAN, PRETRAIN_SIGMA = 460.0, 1.0


def draw_lengths(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Document lengths in tokens, specials included (before chunking)."""
    if kind == "pretrain":
        x = rng.lognormal(np.log(PRETRAIN_MEDIAN), PRETRAIN_SIGMA, n)
        return np.maximum(3, np.rint(x)).astype(np.int64)
    if kind in ("fixed512", "fixed8192"):
        return np.full(n, int(kind[5:]), dtype=np.int64)
    if kind in ("normal256", "normal4096"):
        mean = int(kind[6:])
        return np.clip(np.rint(rng.normal(mean, mean / 4, n)), 16, 2 * mean).astype(np.int64)
    raise InputError(f"--lengths: unknown distribution '{kind}'; valid choices: {', '.join(LENGTHS)}")


def chunk(length: int, max_seq_len: int, n_special: int) -> list[int]:
    """Sample lengths of one document of ``length`` tokens (specials included) cut at
    ``max_seq_len``: the body is split into pieces of at most ``max_seq_len - n_special``."""
    cap = max_seq_len - n_special
    body = length - n_special
    return [min(cap, body - s) + n_special for s in range(0, body, cap)]


def _documents(kind, n_docs, tokens, seed):
    """Lengths in blocks of 4096 until ``n_docs`` documents or ``tokens`` tokens."""
    rng = np.random.default_rng(seed)
    made = total = 0
    while (n_docs and made < n_docs) or (tokens and total < tokens):
        block = draw_lengths(kind, 4096 if not n_docs else min(4096, n_docs - made), rng)
        for length in block:
            yield int(length), rng
            made += 1
            total += int(length)
            if (n_docs and made >= n_docs) or (tokens and not n_docs and total >= tokens):
                return


def write_synthetic(tokenizer_dir: str, out: str, kind: str, max_seq_len: int, documents: int = 0, tokens: int = 0,
                    seed: int = 0, val_fraction: float = 0.01, overwrite: bool = False) -> dict:
    """Write the shards and stats.json; returns the stats (tokenize_to_mds's keys + ``synthetic``)."""
    if kind not in LENGTHS:
        raise InputError(f"--lengths: unknown distribution '{kind}'; valid choices: {', '.join(LENGTHS)}")
    if not documents and not tokens:
        raise InputError("give --documents or --tokens")
    tok = load_tokenizer(tokenizer_dir)
    pre, post = special_tokens_template(tok)
    if max_seq_len < len(pre) + len(post) + 1:
        raise InputError(f"--max-seq-len {max_seq_len} leaves no room next to the special tokens")
    prepare_output_dir(out, overwrite=overwrite, inputs=[tokenizer_dir])
    stats = {name: {"documents": 0, "samples": 0, "tokens": 0} for name in SPLITS}
    doc_lengths, chunked = [], 0
    n_special = len(pre) + len(post)
    with ShardWriter(out, tokenizer_dir, tok) as writer:  # one per split that gets documents, as tokenize_to_mds
        vocab = writer.special.replacement_ids()
        for length, rng in _documents(kind, documents, tokens, seed):
            length = max(length, n_special + 1)
            name = SPLITS[int(rng.random() < val_fraction)]
            pieces = chunk(length, max_seq_len, n_special)
            body = [np.concatenate([pre, vocab[rng.integers(0, len(vocab), n - n_special)], post]) for n in pieces]
            writer.write(name, np.concatenate(body), pieces)
            s = stats[name]
            s["documents"] += 1
            s["samples"] += len(pieces)
            s["tokens"] += sum(pieces)
            doc_lengths.append(length)
            chunked += len(pieces) > 1
        return writer.finish(_stats(stats, doc_lengths, chunked, kind, max_seq_len, seed, val_fraction))


def _stats(stats, doc_lengths, chunked, kind, max_seq_len, seed, val_fraction) -> dict:
    """stats.json's counts (the writer adds the schema, vocabulary and tokenizer identity)."""
    n = len(doc_lengths)
    lengths = np.asarray(doc_lengths)
    return {
        "inputs": [{"path": f"synthetic:{kind}", "split": "auto", "documents": n}],
        "documents_read": n, "documents_written": n, "documents_skipped": {"empty": 0, "no_tokens": 0},
        "documents_chunked": chunked, "documents_truncated": 0, "documents_with_replaced_bytes": 0,
        "samples_written": sum(s["samples"] for s in stats.values()),
        "tokens_written": sum(s["tokens"] for s in stats.values()), "tokens_truncated": 0,
        "splits": stats, "max_seq_len": max_seq_len,
        "val_fraction": val_fraction, "truncate": False, "workers": 1,
        "synthetic": {"lengths": kind, "seed": seed, "document_length_median": float(np.median(lengths)),
                      "document_length_mean": float(lengths.mean()), "document_length_std": float(lengths.std()),
                      "document_length_min": int(lengths.min()), "document_length_max": int(lengths.max())},
    }


