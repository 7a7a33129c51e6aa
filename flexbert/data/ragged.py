"""Two small facts about documents, each owned here once.

* A ragged list of documents ``[(ids, doc_id), ...]`` is saved as three flat tensors
  (``tokens`` int32, ``lengths`` int32, ``doc_ids`` int64) -- plain tensors, so
  ``torch.load(weights_only=True)`` accepts them.  The packer's buffer and the loader's pending
  documents both use this form in checkpoints.
* A document longer than a sequence is cut into chunks of at most ``cap`` body tokens, each
  wrapped in the tokenizer's prefix/suffix (``[CLS]`` .. ``[SEP]``).  The shard writer and the
  loader (reading shards written with a larger ``max_seq_len``) cut the same way.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

Doc = tuple[np.ndarray, int]  # (token ids, document id)


def docs_to_state(docs: Sequence[Doc]) -> dict:
    """``[(ids, doc_id), ...]`` -> ``{"tokens", "lengths", "doc_ids"}`` tensors."""
    tokens = np.concatenate([d[0] for d in docs]).astype(np.int32) if docs else np.zeros(0, np.int32)
    return {
        "tokens": torch.from_numpy(tokens),
        "lengths": torch.tensor([len(d[0]) for d in docs], dtype=torch.int32),
        "doc_ids": torch.tensor([int(d[1]) for d in docs], dtype=torch.int64),
    }


def docs_from_state(state: dict) -> list[Doc]:
    """Inverse of :func:`docs_to_state` (ids come back as int64 numpy arrays)."""
    tokens = state["tokens"].numpy().astype(np.int64)
    out, pos = [], 0
    for n, doc_id in zip(state["lengths"].tolist(), state["doc_ids"].tolist()):
        out.append((tokens[pos : pos + n], doc_id))
        pos += n
    return out


def empty_state() -> dict:
    return docs_to_state([])


def wrapped_chunks(body: np.ndarray, cap: int, pre: Iterable[int], post: Iterable[int]) -> list[np.ndarray]:
    """``body`` cut into pieces of at most ``cap`` tokens, each as ``pre + piece + post``."""
    if cap < 1:
        raise ValueError(f"chunk capacity must be at least 1, got {cap}")
    pre_a = np.asarray(list(pre), dtype=body.dtype)
    post_a = np.asarray(list(post), dtype=body.dtype)
    return [np.concatenate((pre_a, body[i : i + cap], post_a)) for i in range(0, len(body), cap)]


def rechunk(ids: np.ndarray, max_seq_len: int, cls_id: int, sep_id: int) -> list[np.ndarray]:
    """A stored document as sequences of at most ``max_seq_len`` tokens, each ``[CLS] .. [SEP]``
    (an already wrapped document is unwrapped first, so its body is what gets cut)."""
    ids = ids.astype(np.int64)
    if len(ids) <= max_seq_len:
        return [ids]
    wrapped = len(ids) >= 2 and ids[0] == cls_id and ids[-1] == sep_id
    body = ids[1:-1] if wrapped else ids
    return wrapped_chunks(body, max_seq_len - 2, [cls_id], [sep_id])
