"""The counts ``tokenize_to_mds`` keeps while writing shards, and the ``stats.json`` they become."""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "validation")


@dataclass
class ShardStats:
    inputs: list = field(default_factory=list)
    documents_read: int = 0
    documents_written: int = 0
    documents_chunked: int = 0
    documents_truncated: int = 0
    documents_with_replaced_bytes: int = 0
    tokens_truncated: int = 0
    skipped: dict = field(default_factory=lambda: {"empty": 0, "no_tokens": 0})
    splits: dict = field(default_factory=lambda: {s: {"documents": 0, "samples": 0, "tokens": 0} for s in SPLITS})

    def add(self, split: str, lengths: list[int], dropped: int) -> None:
        """One document written to ``split`` as chunks of ``lengths`` tokens, ``dropped`` cut off."""
        s = self.splits[split]
        s["documents"] += 1
        s["samples"] += len(lengths)
        s["tokens"] += sum(lengths)
        self.documents_written += 1
        self.documents_chunked += len(lengths) > 1
        self.documents_truncated += dropped > 0
        self.tokens_truncated += dropped

    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.splits.values())

    def report(self, opts, special, dtype: str, elapsed: float) -> dict:
        """The content of stats.json."""
        tokens = self.tokens()
        return {
            "inputs": self.inputs,
            "documents_read": self.documents_read,
            "documents_written": self.documents_written,
            "documents_skipped": dict(self.skipped),
            "documents_chunked": self.documents_chunked,
            "documents_truncated": self.documents_truncated,
            "documents_with_replaced_bytes": self.documents_with_replaced_bytes,
            "samples_written": sum(s["samples"] for s in self.splits.values()),
            "tokens_written": tokens,
            "tokens_truncated": self.tokens_truncated,
            "splits": self.splits,
            "max_seq_len": opts.max_seq_len,
            "dtype": dtype,
            "vocab_size": special.vocab_size,
            "special_ids": {"cls": special.cls_id, "sep": special.sep_id, "pad": special.pad_id, "mask": special.mask_id},
            "val_fraction": opts.val_fraction,
            "truncate": opts.truncate,
            "workers": opts.workers,
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
        }


def check_stats(s: dict) -> None:
    """The invariants stats.json promises: every document read is written or skipped for a reason."""
    skipped = sum(s["documents_skipped"].values())
    assert s["documents_read"] == s["documents_written"] + skipped, "documents read != written + skipped"
    assert s["documents_read"] == sum(i["documents"] for i in s["inputs"]), "per-file counts do not add up"
    sp = s["splits"].values()
    assert s["documents_written"] == sum(x["documents"] for x in sp), "split documents do not add up"
    assert s["samples_written"] == sum(x["samples"] for x in sp), "split samples do not add up"
    assert s["tokens_written"] == sum(x["tokens"] for x in sp), "split tokens do not add up"
    assert s["samples_written"] >= s["documents_written"], "fewer samples than documents"
