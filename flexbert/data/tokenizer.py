"""Tokenizer helpers: special-token ids for packing/masking, and building/saving BERT-style BPEs.

Two tokenizers are built here (the CLI is ``data_prep/train_tokenizer.py``):

* a small byte-level BPE trained with ``tokenizers`` on given text (demo and tests), and
* a ModernBERT-compatible 50,368-token tokenizer assembled from GPT-2's BPE ranks (the
  ``gpt2.tiktoken`` file that the openai-whisper package ships), with the special tokens at the
  ids ModernBERT uses: [UNK] 50280, [CLS] 50281, [SEP] 50282, [PAD] 50283, [MASK] 50284, and
  83 ``[unusedN]`` tokens after them (the paper: "50,368 ... includes 83 unused tokens").

Both use BERT's template, ``[CLS] A [SEP]`` (pairs: ``[CLS] A [SEP] B [SEP]``), and are saved with
tokenizer.json + tokenizer_config.json + special_tokens_map.json so that
``transformers.AutoTokenizer.from_pretrained(dir)`` loads them offline.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from flexbert.data.sources import iter_documents
from flexbert.errors import FlexBertError

CLS, SEP, MASK, PAD, UNK = "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"
BERT_SPECIALS = (PAD, UNK, CLS, SEP, MASK)  # id order of the small trained tokenizers

# ModernBERT's layout on top of GPT-2's 50,257 ids (0..50255 BPE ranks, 50256 <|endoftext|>).
MODERNBERT_VOCAB_SIZE = 50368
MODERNBERT_SPECIAL_IDS = {UNK: 50280, CLS: 50281, SEP: 50282, PAD: 50283, MASK: 50284}
GPT2_EOT = "<|endoftext|>"
# a byte-level BPE holds every byte as a symbol and the special tokens before its first merge
MIN_BPE_VOCAB = 256 + len(BERT_SPECIALS)


class TokenizerError(FlexBertError, ValueError):
    """A tokenizer that cannot be built as asked (one line naming the option or input)."""


# --------------------------------------------------------------------------- special ids
@dataclass(frozen=True)
class SpecialTokens:
    """The ids the data pipeline needs, read off a tokenizer rather than assumed."""

    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    vocab_size: int  # including added tokens
    special_ids: tuple[int, ...] = field(repr=False)  # every id flagged special (incl. [unusedN])

    @classmethod
    def from_tokenizer(cls, tok) -> "SpecialTokens":
        """From a ``tokenizers.Tokenizer``."""
        ids = {}
        for name in (PAD, CLS, SEP, MASK, UNK):
            i = tok.token_to_id(name)
            if i is None:
                raise TokenizerError(f"tokenizer has no {name} token; FlexBERT needs BERT special tokens (flexbert train-tokenizer)")
            ids[name] = i
        special = sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
        return cls(
            pad_id=ids[PAD],
            cls_id=ids[CLS],
            sep_id=ids[SEP],
            mask_id=ids[MASK],
            unk_id=ids[UNK],
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
            special_ids=tuple(sorted(set(special) | set(ids.values()))),
        )

    @classmethod
    def from_dir(cls, path: str) -> "SpecialTokens":
        return cls.from_tokenizer(load_tokenizer(path))

    def special_mask(self) -> np.ndarray:
        """Boolean lookup table over the vocabulary: True for ids MLM must never select."""
        m = np.zeros(self.vocab_size, dtype=bool)
        m[list(self.special_ids)] = True
        return m

    def replacement_ids(self) -> np.ndarray:
        """Ids a random MLM replacement is drawn from: the whole vocabulary minus special ids."""
        return np.flatnonzero(~self.special_mask()).astype(np.int64)


def load_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from a directory holding tokenizer.json (or the file itself)."""
    f = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(f):
        raise FileNotFoundError(f"no tokenizer.json at {path}")
    return Tokenizer.from_file(f)


def special_tokens_template(tok) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single sequence (``[CLS]`` / ``[SEP]``).

    Read from the tokenizer itself so that chunks of a long document are wrapped exactly as the
    tokenizer wraps a whole one.
    """
    enc = tok.encode("a", add_special_tokens=True)
    mask = enc.special_tokens_mask
    n_pre = 0
    while n_pre < len(mask) and mask[n_pre]:
        n_pre += 1
    n_post = 0
    while n_post < len(mask) - n_pre and mask[len(mask) - 1 - n_post]:
        n_post += 1
    return list(enc.ids[:n_pre]), list(enc.ids[len(enc.ids) - n_post :])


# --------------------------------------------------------------------------- shared finishing
def _bert_template(tok, cls_id: int, sep_id: int):
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )


def _special(content: str, **kw):
    return AddedToken(content, special=True, normalized=False, **kw)


def pad_vocab(tok, multiple: int = 64, target: int | None = None, prefix: str = "[unused") -> int:
    """Append ``[unused0]``, ``[unused1]``, ... (special) until the vocabulary is a multiple of
    ``multiple`` (or exactly ``target``).  Returns the number of tokens added.

    A multiple of 64 keeps the embedding/decoder matmuls on tensor-core friendly shapes.
    """
    n = tok.get_vocab_size(with_added_tokens=True)
    extra = (-n) % multiple if target is None else target - n
    if extra < 0 or (target is not None and target % multiple):
        raise ValueError(f"cannot pad a vocabulary of {n} to {target} (multiple of {multiple})")
    tok.add_special_tokens([_special(f"{prefix}{i}]") for i in range(extra)])
    return extra


# --------------------------------------------------------------------------- small trained BPE
def train_bpe(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2, multiple: int = 64,
              show_progress: bool = False, source: str = "the input"):
    """Train a byte-level BPE with BERT special tokens; total vocab padded to ``multiple``.

    ``vocab_size`` counts everything (specials + merges, at least ``MIN_BPE_VOCAB``); it is rounded
    up to ``multiple``.  Blank texts are skipped; none left is a ``TokenizerError`` naming ``source``.
    """
    if vocab_size < MIN_BPE_VOCAB:  # the trainer would silently give the bytes-only vocabulary instead
        raise TokenizerError(f"--vocab-size {vocab_size} is below the minimum of a byte-level BPE, {MIN_BPE_VOCAB} "
                             f"(256 byte symbols + {len(BERT_SPECIALS)} special tokens); give {MIN_BPE_VOCAB} or more")
    texts = (t for t in texts if t and t.strip())
    first = next(texts, None)
    if first is None:  # the trainer would "train" the bytes-only vocabulary on nothing
        raise TokenizerError(f"no text to train on in {source}: 0 non-blank documents (check the files and the field)")
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    # Byte-level: every string is representable, so [UNK] is never produced (it exists for BERT
    # compatibility); no normaliser, so decoding gives back the exact text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    target = vocab_size + (-vocab_size) % multiple
    trainer = trainers.BpeTrainer(
        vocab_size=target,
        min_frequency=min_frequency,
        special_tokens=[_special(t, lstrip=(t == MASK)) for t in BERT_SPECIALS],  # "a [MASK]" eats the space
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(itertools.chain([first], texts), trainer=trainer)
    # the trainer may stop short of the target (small corpus): pad with unused tokens
    pad_vocab(tok, multiple)
    _bert_template(tok, tok.token_to_id(CLS), tok.token_to_id(SEP))
    return tok


# --------------------------------------------------------------------------- GPT-2 / ModernBERT
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...) are
    shifted to code points 256+ so that no vocabulary entry contains whitespace or controls.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, shift = {}, 0
    for b in range(256):
        out[b] = chr(b) if b in keep else chr(256 + shift)
        shift += b not in keep
    return out


def read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file: one ``base64(token) rank`` per line."""
    ranks = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    tok, rank = line.split()
                    ranks[base64.b64decode(tok, validate=True)] = int(rank)
                except ValueError:  # binascii.Error is a ValueError too
                    raise TokenizerError(f"{path}:{lineno}: not a .tiktoken line ('<base64 token> <rank>'); give "
                                         "gpt2.tiktoken (--tiktoken, or leave it out to fetch it)") from None
    return ranks


def _lowest_rank_split(ranks: dict[bytes, int], token: bytes, below: int) -> list[bytes]:
    """Run byte-level BPE on ``token`` using only merges ranked below ``below``.

    For a vocabulary token of rank r this ends in exactly two pieces: the pair whose merge
    created it.  That recovers the merge list that tiktoken files leave implicit.
    """
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, below
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def bpe_from_tiktoken(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) in the byte-level string form that ``tokenizers.models.BPE`` takes."""
    b2u = _byte_to_unicode()

    def s(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {s(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _lowest_rank_split(ranks, token, rank)
        if len(parts) != 2:
            raise TokenizerError(f"rank {rank} ({token!r}) is not the merge of two lower-ranked tokens (not a BPE rank file)")
        merges.append((s(parts[0]), s(parts[1])))
    return vocab, merges


def build_modernbert_tokenizer(tiktoken_path: str):
    """GPT-2 BPE (ids preserved) + ModernBERT's special-token layout, 50,368 ids in total."""
    ranks = read_tiktoken_ranks(tiktoken_path)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{tiktoken_path}: ranks are not 0..{len(ranks) - 1} (not gpt2.tiktoken)")
    vocab, merges = bpe_from_tiktoken(ranks)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    # GPT-2's pre-tokenizer: its contraction/letters/digits/punctuation/whitespace regex, on bytes
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()

    n = len(ranks)  # 50256
    added = [_special(GPT2_EOT)]  # GPT-2's own id n
    first_bert = MODERNBERT_SPECIAL_IDS[UNK]
    added += [_special(f"[reserved{i}]") for i in range(first_bert - n - 1)]  # fill up to 50280
    for name in (UNK, CLS, SEP, PAD, MASK):  # 50280..50284 in this order
        # [MASK] swallows the space before it, as BERT/ModernBERT do ("a [MASK] b")
        added.append(_special(name, lstrip=(name == MASK)))
    tok.add_special_tokens(added)
    pad_vocab(tok, 64, target=MODERNBERT_VOCAB_SIZE)  # 83 [unusedN], like ModernBERT
    got = {name: tok.token_to_id(name) for name in MODERNBERT_SPECIAL_IDS}
    if got != MODERNBERT_SPECIAL_IDS or tok.get_vocab_size(with_added_tokens=True) != MODERNBERT_VOCAB_SIZE:
        raise AssertionError(f"special ids {got}, vocab {tok.get_vocab_size(True)} do not match ModernBERT")
    _bert_template(tok, got[CLS], got[SEP])
    return tok


# --------------------------------------------------------------------------- saving
def save_tokenizer(tok, out_dir: str, model_max_length: int = 8192) -> None:
    """Write the three files ``AutoTokenizer.from_pretrained(out_dir)`` needs (no hub access)."""
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    specials = {"cls_token": CLS, "sep_token": SEP, "mask_token": MASK, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        **specials,
    }
    for name, obj in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def iter_texts_from_files(paths: Iterable[str], field: str = "text") -> Iterator[str]:
    """Texts for tokenizer training: .jsonl (``field``) or .txt (one per line), optionally compressed."""
    for path in paths:
        for doc in iter_documents(path, field=field):
            yield doc.text
