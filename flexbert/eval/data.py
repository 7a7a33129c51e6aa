"""Fine-tuning batches: tokenised examples packed unpadded, as the encoder runs them.

A batch of B examples is ``{"input_ids": (T,), "cu_seqlens": (B+1,), "max_seqlen": int,
"labels": (B,)}``: the examples' tokens end to end (no padding), one prediction per example.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from flexbert.data.tokenizer import load_tokenizer


def encode_texts(tokenizer_dir: str, texts: Sequence[tuple[str, ...]], max_seq_len: int) -> list[list[int]]:
    """Token ids with the tokenizer's own template (``[CLS] a [SEP] (b [SEP])``), truncated to
    ``max_seq_len`` (the longer text of a pair loses tokens first)."""
    tok = load_tokenizer(tokenizer_dir)
    tok.no_padding()
    tok.enable_truncation(max_length=max_seq_len, strategy="longest_first")
    inputs = [t[0] if len(t) == 1 else (t[0], t[1]) for t in texts]
    return [e.ids for e in tok.encode_batch(inputs, add_special_tokens=True)]


class EncodedTask(Dataset):
    def __init__(self, ids: list[list[int]], labels: Optional[Sequence] = None, regression: bool = False):
        self.ids = ids
        self.labels = labels
        self.regression = regression

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        label = None if self.labels is None else self.labels[i]
        return self.ids[i], label


def pack(examples: list) -> dict:
    """Collate: concatenate the examples' tokens; cu_seqlens marks where each starts."""
    lengths = [len(ids) for ids, _ in examples]
    cu = torch.zeros(len(examples) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
    batch = {
        "input_ids": torch.tensor([t for ids, _ in examples for t in ids], dtype=torch.long),
        "cu_seqlens": cu,
        "max_seqlen": max(lengths),
    }
    labels = [label for _, label in examples]
    if all(label is not None for label in labels):
        is_float = any(isinstance(label, float) for label in labels)
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if is_float else torch.long)
    return batch


def loader(data: EncodedTask, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, collate_fn=pack, num_workers=0)

