"""Held-out MLM loss and accuracy of a model on MDS shards, at a fixed masking rate and seed.

The batches are the training loader's evaluation path (``build_eval_loader``: packed rows, masks a
pure function of the seed and row index), the loop and numbers are the training run's own
(``flexbert/train/mlm_eval.py``: means over every masked token), and the model comes from
``flexbert.train.pretrained`` (run folder, checkpoint or Hugging Face folder).  So a run's own eval
loss and this script agree when given the same shards, rate and seed.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch


def shard_max_seq_len(shards: str) -> Optional[int]:
    """The ``max_seq_len`` tokenize_to_mds.py wrote the shards with (stats.json), if recorded."""
    path = os.path.join(shards, "stats.json")
    if os.path.exists(path):
        with open(path) as f:
            value = json.load(f).get("max_seq_len")
        return int(value) if value else None
    return None


def data_config(shards: str, split: str = "validation", mlm_probability: float = 0.15, seed: int = 1234,
                max_seq_len: Optional[int] = None, rows_of: Optional[int] = None, tokenizer: Optional[str] = None,
                run_data: Optional[dict] = None):
    """The eval loader's DataConfig: the run's data section (same row shape and packing as its own
    evaluation) with the shards, split, rate and seed given here; else the shards' row length."""
    from flexbert.config import from_dict
    from flexbert.data.config import DataConfig

    d = {k: v for k, v in (run_data or {}).items() if k not in ("remote", "tokenizer")}
    d.update(local=shards, eval_split=split, eval_mlm_probability=mlm_probability, eval_seed=seed, num_workers=0)
    d["max_seq_len"] = int(max_seq_len or d.get("max_seq_len") or shard_max_seq_len(shards) or 1024)
    d["microbatch_size"] = int(rows_of or d.get("microbatch_size") or 8)
    for key in ("global_batch_size", "batch_size_warmup_min", "batch_size_warmup_tokens"):
        d.pop(key, None)  # training step shape: irrelevant here, and must not contradict microbatch_size
    if tokenizer:
        d["tokenizer"] = tokenizer
    return from_dict(DataConfig, d, "data")


def check_model_tokenizer(pre, data_cfg, name: str) -> None:
    """The model (a flexbert.train.pretrained.Pretrained) must have been trained with the shards'
    tokenizer, when both are known, and its embeddings must cover the shards' ids (one line)."""
    from flexbert.data.tokenizer import SpecialTokens

    fp = data_cfg.shards_fingerprint()
    try:
        size = SpecialTokens.from_dir(data_cfg.tokenizer_dir()).vocab_size
    except (FileNotFoundError, OSError):
        size = None
    pre.check_tokenizer(fp, name, size)


def evaluate_mlm(model: torch.nn.Module, data_cfg, max_batches: Optional[int] = None, device: str = "cpu") -> dict:
    """{"loss", "accuracy", "perplexity", "masked_tokens", "rows"} over the split (or its first
    ``max_batches`` batches): training's own evaluation loop (``flexbert/train/mlm_eval.py``) on
    the eval loader of ``data_cfg``."""
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.data.loader import build_eval_loader
    from flexbert.train.mlm_eval import evaluate_mlm as evaluate

    clean_stale_shared_memory()
    return evaluate(model, build_eval_loader(data_cfg), max_batches, device)


def evaluate_by_length(model: torch.nn.Module, data_cfg, bounds, max_batches: Optional[int] = None,
                       device: str = "cpu") -> list[dict]:
    """Per document-length range loss, on the same eval rows as ``evaluate_mlm``
    (flexbert/train/mlm_eval.py ``evaluate_mlm_by_length``)."""
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.data.loader import build_eval_loader
    from flexbert.train.mlm_eval import evaluate_mlm_by_length

    clean_stale_shared_memory()
    return evaluate_mlm_by_length(model, build_eval_loader(data_cfg), bounds, max_batches, device)
