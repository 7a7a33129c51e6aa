"""Build a FlexBERT tokenizer (BERT special tokens, "[CLS] A [SEP]" template, vocab padded to a
multiple of 64), saved so that ``AutoTokenizer.from_pretrained(OUT)`` works offline.

    # a byte-level BPE trained on your text
    flexbert train-tokenizer bpe --input data/demo/pretrain/train.jsonl --vocab-size 8192 --out runs/tok8k
    # the 50,368-token ModernBERT-compatible tokenizer from GPT-2's BPE (openai-whisper's gpt2.tiktoken)
    flexbert train-tokenizer modernbert --out runs/tok-modernbert [--tiktoken PATH]

Without --tiktoken the whisper sdist is fetched into the cache (``pip download``, see
flexbert/data/demo_sources.py).  See docs/data.md.
"""

from __future__ import annotations

import argparse
import time

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least
from flexbert.data import tokenizer as T
from flexbert.data.demo_sources import gpt2_tiktoken_path
from flexbert.data.outputs import check_output_dir, prepare_output_dir


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert train-tokenizer")
    sub = p.add_subparsers(dest="kind", required=True)
    b = sub.add_parser("bpe", help="train a byte-level BPE on text files")
    b.add_argument("--input", nargs="+", required=True,
                   help="corpus files or folders: .txt, .jsonl, .json, .csv, .tsv, .parquet, optionally compressed")
    b.add_argument("--field", default="text")
    b.add_argument("--vocab-size", type=int, default=8192, help="total size, rounded up to a multiple of 64")
    b.add_argument("--min-frequency", type=at_least(1), default=2)
    m = sub.add_parser("modernbert", help="GPT-2 BPE with ModernBERT's special-token ids (50,368)")
    m.add_argument("--tiktoken", default=None, help="path to gpt2.tiktoken (default: from the whisper sdist in the cache)")
    m.add_argument("--cache", default=None, help="download cache (default $FLEXBERT_CACHE or ./cache)")
    for s in (b, m):
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--overwrite", action="store_true",
                       help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
        s.add_argument("--model-max-length", type=at_least(1), default=8192)
    return p


def run(a: argparse.Namespace) -> int:
    t0 = time.time()
    inputs = a.input if a.kind == "bpe" else [a.tiktoken]
    check_output_dir(a.out, inputs)  # before training: a refused --out costs nothing
    if a.kind == "bpe":
        tok = T.train_bpe(T.iter_texts_from_files(a.input, a.field), a.vocab_size, a.min_frequency, show_progress=True,
                          source=f"--input {' '.join(a.input)} (field '{a.field}')")
    else:
        tok = T.build_modernbert_tokenizer(a.tiktoken or gpt2_tiktoken_path(a.cache))
    prepare_output_dir(a.out, overwrite=a.overwrite, inputs=inputs)
    T.save_tokenizer(tok, a.out, a.model_max_length)
    s = T.SpecialTokens.from_tokenizer(tok)
    print(f"saved {a.out}: vocab {s.vocab_size}, cls {s.cls_id} sep {s.sep_id} pad {s.pad_id} "
          f"mask {s.mask_id} unk {s.unk_id}, {len(s.special_ids)} special ids ({time.time() - t0:.1f}s)")
    return 0


main = command(parser, run)
