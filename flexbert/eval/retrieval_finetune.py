"""Retrieval fine-tuning: (query, positive passage) pairs, in-batch negatives.

The loss is sentence-transformers' ``MultipleNegativesRankingLoss`` (each query against every
passage of its batch, cross-entropy towards its own; the standard recipe for dense retrievers),
driven by a plain loop: sentence-transformers' own Trainer needs ``datasets`` and ``accelerate``,
whose current releases require a ``huggingface_hub`` (>= 1.0) that the pinned transformers 4.53
cannot use.  The model is any SentenceTransformer folder (a FlexBERT export carries its pooling
files); the output folder is a SentenceTransformer again, for ``scripts/eval_retrieval.py``.
"""

from __future__ import annotations

import json
import os
import random
from typing import Callable, Optional

import torch

from flexbert.data.readers import InputError, read_records


def read_pairs(path: str, query_column: str = "query", positive_column: str = "positive") -> list[tuple[str, str]]:
    """(query, positive) pairs from any table format of the reader registry (.jsonl, .csv, .tsv, ...)."""
    pairs = []
    for r in read_records(path):
        row = r.value if isinstance(r.value, dict) else {}
        missing = [c for c in (query_column, positive_column) if not isinstance(row.get(c), str)]
        if missing:
            raise InputError(f"{path}:{r.line}: no text in column '{missing[0]}' (columns: {', '.join(row) or 'none'})")
        pairs.append((row[query_column], row[positive_column]))
    if len(pairs) < 2:
        raise InputError(f"{path}: {len(pairs)} pair(s); in-batch negatives need at least 2")
    return pairs


def _features(model, texts: list[str]) -> dict:
    feats = model.tokenize(texts)
    return {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in feats.items()}


def finetune_retrieval(model_path: str, pairs_path: str, out: str, *, epochs: int = 1, batch_size: int = 32,
                       lr: float = 2e-5, max_seq_len: Optional[int] = None, seed: int = 0, overwrite: bool = False,
                       query_column: str = "query", positive_column: str = "positive",
                       log: Callable[[str], None] = print) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from flexbert.data.outputs import check_output_dir, prepare_output_dir

    check_output_dir(out, [model_path, pairs_path])
    pairs = read_pairs(pairs_path, query_column, positive_column)
    torch.manual_seed(seed)
    model = SentenceTransformer(model_path)
    if max_seq_len:
        model.max_seq_length = max_seq_len
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng, losses = random.Random(seed), []
    model.train()
    for epoch in range(epochs):
        order, first = list(pairs), len(losses)
        rng.shuffle(order)
        for i in range(0, len(order) - 1, batch_size):
            batch = order[i: i + batch_size]
            if len(batch) < 2:
                continue
            loss = loss_fn([_features(model, [q for q, _ in batch]), _features(model, [p for _, p in batch])], None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        done = losses[first:]
        log(f"[finetune_retrieval] epoch {epoch + 1}/{epochs}: {len(done)} steps, mean loss {sum(done) / max(1, len(done)):.4f}")
    prepare_output_dir(out, overwrite=overwrite, inputs=[model_path, pairs_path])
    model.save(out)
    info = {"model": model_path, "pairs": pairs_path, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "losses": losses, "steps": len(losses)}
    with open(os.path.join(out, "finetune_retrieval.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
