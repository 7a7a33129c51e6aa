"""What a data section stands for on disk: its tokenizer, special ids, fingerprint and digest.

A ``DataConfig`` is plain data: parsing it reads no file and touches no network.  The loader
builder resolves it once (``resolve_source``) into a ``DataSource``: the tokenizer folder
(``data.tokenizer``, else the copy next to the shards, fetched from the object store when only the
store has it), its special ids and vocabulary size, the tokenizer fingerprint the shards were
written with (common to every source; ``data.tokenizer`` must be that tokenizer) and a digest of
the shards.  Everything that needs one of these facts takes the ``DataSource``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

from flexbert.data.config import DataConfig
from flexbert.data.fingerprint import check_same, common_fingerprint, shards_digest, shards_fingerprint, tokenizer_fingerprint
from flexbert.data.remote import fetch_tokenizer
from flexbert.data.tokenizer import SpecialTokens


@dataclass(frozen=True)
class DataSource:
    tokenizer_dir: str
    special: SpecialTokens
    fingerprint: Optional[str]  # the tokenizer the shards were written with (None: unknown)
    digest: Optional[str]  # of every source's shards (None: one is unknown)


def tokenizer_dir(cfg: DataConfig) -> str:
    """data.tokenizer, else the copy written next to the shards: <local>/tokenizer, fetched from
    <remote>/tokenizer into the local cache when only the store has it; FileNotFoundError if none."""
    if cfg.tokenizer:
        return cfg.tokenizer
    for local, _ in cfg.sources():
        guess = os.path.join(local, "tokenizer")
        if local and os.path.isfile(os.path.join(guess, "tokenizer.json")):
            return guess
    for local, remote in cfg.sources():
        if remote:
            return fetch_tokenizer(remote, local)
    guess = os.path.join(cfg.sources()[0][0], "tokenizer")
    raise FileNotFoundError(f"no tokenizer: set data.tokenizer (none found at {guess}, where `flexbert tokenize` puts a copy)")


def data_fingerprint(cfg: DataConfig) -> Optional[str]:
    """The tokenizer fingerprint the shards were written with (flexbert/data/fingerprint.py):
    common to every source, and ``data.tokenizer`` when set must be that tokenizer; None when
    unknown.  Raises TokenizerMismatchError naming both sides."""
    fp = common_fingerprint({f"shards {local or remote}": shards_fingerprint(local, remote)
                             for local, remote in cfg.sources()})
    if cfg.tokenizer and os.path.exists(cfg.tokenizer):
        check_same(tokenizer_fingerprint(cfg.tokenizer), f"data.tokenizer {cfg.tokenizer}", fp, "the shards")
    return fp


def data_digest(cfg: DataConfig) -> Optional[str]:
    """A digest of every source's shards (flexbert/data/fingerprint.py); None when one is unknown."""
    digests = [shards_digest(local) for local, _ in cfg.sources()]
    if not digests or None in digests:
        return None
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def resolve_source(cfg: DataConfig) -> DataSource:
    """The data section's files, resolved once (see the module docstring)."""
    tok = tokenizer_dir(cfg)
    return DataSource(tok, SpecialTokens.from_dir(tok), data_fingerprint(cfg), data_digest(cfg))
