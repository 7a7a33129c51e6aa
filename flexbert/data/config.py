"""``DataConfig``: every option of the data pipeline, defaults in code, loaded with
``flexbert.config.from_dict(DataConfig, mapping, "data")`` (unknown keys fail with a did-you-mean).

Units, so that YAML reads like the paper:

* a *sequence* is ``max_seq_len`` tokens of budget; batch sizes are counted in sequences
  (ModernBERT-base: global 4608, microbatch 96, warmup from 768 over 50B tokens);
* a *row* is one packed microbatch of ``microbatch_size * max_seq_len`` tokens (docs/internals.md);
* a step on one rank holds ``global_batch_size / microbatch_size / world_size`` rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union  # noqa: E402,I001 - data.microbatch_size: int or "auto"

from flexbert.config import ConfigError, from_dict
from flexbert.errors import FlexBertError
from flexbert.data.mask_schedule import MaskScheduleError, parse_mask_schedule
from flexbert.data.stream_config import load_streams


class DataMissing(FlexBertError, FileNotFoundError):
    """The data a run reads is not where its config says (the message is one line)."""


@dataclass
class DataConfig:
    # where the MDS shards are (written by data_prep/tokenize_to_mds.py)
    local: str = ""  # folder with <split>/index.json; the download cache when remote is set
    remote: Optional[str] = None  # s3://, gs://, oci://, hf:// ... (Streaming downloads into local)
    split: str = "train"
    eval_split: Optional[str] = "validation"  # None or "": no evaluation data
    tokenizer: str = ""  # folder with tokenizer.json; default: <local>/tokenizer (written with the shards)
    # a mixture of named sources instead of local/remote (flexbert/data/streams.py); data.local is
    # then the cache root of remote-only streams (<local>/<name>)
    streams: dict[str, Any] = field(default_factory=dict)
    epoch_size: Optional[int] = None  # documents per epoch of a proportion-weighted mixture (default: all)
    # data.streams sampled by size**tau / sum (sizes: tokens in each stream's stats.json); the streams
    # then give no proportion/repeat/choose.  1: by size; 0: uniform over sources
    streams_temperature: Optional[float] = None

    # row shape and step size
    max_seq_len: int = 1024  # longest document (chunk) and the attention span unit
    microbatch_size: Union[int, Literal["auto"]] = 1  # sequences per row (row = microbatch_size * max_seq_len
    # tokens); "auto": the largest that fits the GPU, found by trying (flexbert/train/microbatch.py)
    global_batch_size: int = 0  # sequences per optimizer step over all ranks; 0: one row per rank

    # batch-size warmup (counted in tokens, see flexbert/data/warmup.py); 0 turns it off
    batch_size_warmup_min: int = 0  # sequences per step at the start
    batch_size_warmup_tokens: int = 0  # tokens over which the batch grows to global_batch_size

    # MLM
    mlm_probability: Any = 0.30  # a rate, or a schedule {start, end, shape, tokens} (flexbert/data/mask_schedule.py)
    mask_token_fraction: float = 0.8  # of the selected tokens: replaced by [MASK]
    random_token_fraction: float = 0.1  # ... by a random token; the rest stay unchanged
    eval_mlm_probability: float = 0.15  # fixed so eval losses compare across runs
    seed: int = 17  # shuffle and training masks; build_train_loader(seed=...) overrides it
    eval_seed: int = 1234  # eval masks: the same every evaluation and every run

    # packing
    packer_buffer_size: int = 2048  # documents held for best-fit lookahead
    eval_rows_per_batch: int = 1

    # reading
    num_workers: int = 2  # DataLoader worker processes decoding shards (0: in the main process)
    doc_batch_size: int = 256  # documents fetched from Streaming per DataLoader batch
    shuffle: bool = True
    shuffle_algo: str = "py1e"
    shuffle_block_size: Optional[int] = None
    num_canonical_nodes: Optional[int] = None  # default: number of nodes (fixed at first run)
    predownload: Optional[int] = None
    cache_limit: Optional[str] = None  # e.g. "100gb": evict shards beyond this (remote only)
    download_timeout: float = 60.0
    epochs: Optional[int] = None  # train loader stops after this many passes; None: never stops
    return_doc_ids: bool = False  # add "doc_ids" (Streaming sample ids) to each row, for audits

    def _validate_sources(self, prefix: str, bad) -> None:
        """data.local / remote, or data.streams (typed here) and their temperature."""
        if self.streams:
            if self.remote:
                raise bad("remote", "give each of data.streams its own remote (data.remote is for a single source)")
            self.streams = load_streams(self.streams, prefix or "data")
            for name, s in self.streams.items():
                if not s.local and self.local:
                    s.local = os.path.join(self.local, name)  # the download cache of a remote-only stream
        elif not self.local and not self.remote:
            raise bad("local", "set the folder of the MDS shards (flexbert tokenize --out)")
        if self.streams_temperature is not None:
            if not self.streams or not 0 <= self.streams_temperature <= 1:
                raise bad("streams_temperature", f"a temperature in [0, 1] for data.streams, got {self.streams_temperature}"
                          + ("" if self.streams else " without data.streams"))
            weighted = [n for n, s in self.streams.items() if any(getattr(s, k) is not None for k in ("proportion", "repeat", "choose"))]
            if weighted:
                raise bad(f"streams.{weighted[0]}", "streams_temperature sets every stream's proportion: give none here")

    def _validate_masking(self, p: str, bad) -> None:
        """The training rate (or schedule), the eval rate, the [MASK] / random split."""
        try:
            parse_mask_schedule(self.mlm_probability, f"{p}mlm_probability")
        except MaskScheduleError as e:
            raise ConfigError(str(e)) from None
        if not 0.0 < self.eval_mlm_probability < 1.0:
            raise bad("eval_mlm_probability", f"must be in (0, 1), got {self.eval_mlm_probability}")
        fractions = (self.mask_token_fraction, self.random_token_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise bad("mask_token_fraction", f"mask_token_fraction ({fractions[0]}) and random_token_fraction "
                                             f"({fractions[1]}) must be >= 0 and sum to <= 1")

    def validate(self, prefix: str = "data") -> None:
        p = (prefix + ".") if prefix else ""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{p}{key}: {msg}")

        self._validate_sources(prefix, bad)
        if self.epoch_size is not None and (self.epoch_size < 1 or not self.streams):
            raise bad("epoch_size", "must be >= 1 and needs data.streams")
        if not self.split:
            raise bad("split", "must name a split, e.g. 'train'")
        for key, lo in (("max_seq_len", 4), ("microbatch_size", 1), ("packer_buffer_size", 1), ("doc_batch_size", 1),
                        ("eval_rows_per_batch", 1)):
            if getattr(self, key) != "auto" and getattr(self, key) < lo:
                raise bad(key, f"must be >= {lo}, got {getattr(self, key)}")
        for key in ("global_batch_size", "batch_size_warmup_min", "batch_size_warmup_tokens", "num_workers", "seed", "eval_seed"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        self._validate_masking(p, bad)
        if self.microbatch_size == "auto" and not self.global_batch_size:
            raise bad("microbatch_size", "auto needs global_batch_size (rows are chosen among its divisors)")
        if self.microbatch_size != "auto" and self.global_batch_size % self.microbatch_size:
            raise bad("global_batch_size", f"{self.global_batch_size} is not a multiple of microbatch_size {self.microbatch_size}")
        if self.batch_size_warmup_min:
            if not self.global_batch_size:
                raise bad("batch_size_warmup_min", "batch-size warmup needs global_batch_size")
            if self.batch_size_warmup_min > self.global_batch_size:
                raise bad("batch_size_warmup_min", f"{self.batch_size_warmup_min} exceeds global_batch_size {self.global_batch_size}")
            if not self.batch_size_warmup_tokens:
                raise bad("batch_size_warmup_tokens", "must be > 0 when batch_size_warmup_min is set")
        if self.epochs is not None and self.epochs < 1:
            raise bad("epochs", f"must be >= 1 or null, got {self.epochs}")
        if self.num_canonical_nodes is not None and self.num_canonical_nodes < 1:
            raise bad("num_canonical_nodes", f"must be >= 1, got {self.num_canonical_nodes}")
        if self.download_timeout <= 0:
            raise bad("download_timeout", "must be > 0")

    @property
    def row_tokens(self) -> int:
        """T: the static length of every packed row."""
        if self.microbatch_size == "auto":
            raise ValueError("data.microbatch_size: auto has no row size until training resolves it (flexbert/train/microbatch.py)")
        return self.microbatch_size * self.max_seq_len

    def require_local(self) -> None:
        """DataMissing when the run reads a local shard folder that is not there (train.py asks
        before it imports Composer: the answer takes a second, not half a minute)."""
        if not self.streams and not self.remote and not os.path.isdir(self.local):
            raise DataMissing(f"data.local: folder {self.local} does not exist (write shards with `flexbert tokenize`)")

    def sources(self) -> list[tuple[str, Optional[str]]]:
        """(local, remote) of every source: the streams, or data.local/remote."""
        if self.streams:
            return [(s.local, s.remote) for s in self.streams.values()]
        return [(self.local, self.remote)]

    @property
    def mask_schedule(self):
        """``mlm_probability`` as a MaskSchedule (a constant rate is a schedule that stays put)."""
        return parse_mask_schedule(self.mlm_probability)

    @property
    def max_mlm_probability(self) -> float:
        """The highest training masking rate of the phase (what memory and static shapes must hold)."""
        return self.mask_schedule.highest

    @classmethod
    def from_dict(cls, data, prefix: str = "data") -> "DataConfig":
        return from_dict(cls, data, prefix)
