#!/usr/bin/env python
"""Build a FlexBERT tokenizer (BERT special tokens, "[CLS] A [SEP]" template, vocab padded to a
multiple of 64), saved so that ``AutoTokenizer.from_pretrained(OUT)`` works offline.

    # a byte-level BPE trained on your text
    python data_prep/train_tokenizer.py bpe --input data/demo/pretrain/train.jsonl --vocab-size 8192 --out runs/tok8k
    # the 50,368-token ModernBERT-compatible tokenizer from GPT-2's BPE (openai-whisper's gpt2.tiktoken)
    python data_prep/train_tokenizer.py modernbert --out runs/tok-modernbert [--tiktoken PATH]

Without --tiktoken the whisper sdist is fetched into the cache (``pip download``, see
data_prep/fetch_demo_corpus.py).  See docs/data.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flexbert.data import tokenizer as T  # noqa: E402
from flexbert.data.outputs import OutputError, check_output_dir, prepare_output_dir  # noqa: E402
from flexbert.data.readers import InputError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    b = sub.add_parser("bpe", help="train a byte-level BPE on text files")
    b.add_argument("--input", nargs="+", required=True, help="corpus files or folders: .txt, .jsonl, .json, .csv, .tsv, .parquet, optionally compressed")
    b.add_argument("--field", default="text")
    b.add_argument("--vocab-size", type=int, default=8192, help="total size, rounded up to a multiple of 64")
    b.add_argument("--min-frequency", type=int, default=2)
    m = sub.add_parser("modernbert", help="GPT-2 BPE with ModernBERT's special-token ids (50,368)")
    m.add_argument("--tiktoken", default=None, help="path to gpt2.tiktoken (default: from the whisper sdist in the cache)")
    m.add_argument("--cache", default=None, help="download cache (default $FLEXBERT_CACHE or ./cache)")
    for s in (b, m):
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--overwrite", action="store_true",
                       help="replace a non-empty --out whole (its files are deleted; never a folder holding an input)")
        s.add_argument("--model-max-length", type=int, default=8192)
    a = p.parse_args(argv)

    t0 = time.time()
    inputs = a.input if a.kind == "bpe" else [a.tiktoken]
    try:
        check_output_dir(a.out, inputs)  # before training: a refused --out costs nothing
        if a.kind == "bpe":
            tok = T.train_bpe(T.iter_texts_from_files(a.input, a.field), a.vocab_size, a.min_frequency, show_progress=True)
        else:
            path = a.tiktoken
            if path is None:
                from fetch_demo_corpus import gpt2_tiktoken_path  # same folder

                path = gpt2_tiktoken_path(a.cache)
            tok = T.build_modernbert_tokenizer(path)
        prepare_output_dir(a.out, overwrite=a.overwrite, inputs=inputs)
    except (InputError, OutputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    T.save_tokenizer(tok, a.out, a.model_max_length)
    s = T.SpecialTokens.from_tokenizer(tok)
    print(f"saved {a.out}: vocab {s.vocab_size}, cls {s.cls_id} sep {s.sep_id} pad {s.pad_id} "
          f"mask {s.mask_id} unk {s.unk_id}, {len(s.special_ids)} special ids ({time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
