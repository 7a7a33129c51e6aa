"""Held-out MLM evaluation: loss, accuracy and perplexity over every masked token, optionally by
document length.

One loop for every caller: the ``mlm`` evaluation (``flexbert eval-mlm``: a model on shards, at a
fixed masking rate and seed; ``MlmEvalConfig``, a ``Result`` in result.json), the phase chain (each
phase's weights at each phase's length) and the pretraining benchmark.  The
batches are the training loader's evaluation path (``build_eval_loader``: packed rows, masks a
pure function of the seed and row index), each row goes through ``row_outputs`` - the forward and
configured loss training's own Composer evaluator runs - and the metrics are the training run's
(``flexbert/train/composer_model.py``: means over every masked token, not of batch means).  So a
run's own eval loss and this evaluation agree to the last digit on the same rows.

With ``bounds`` the same pass also attributes every masked token to the document (packed segment)
it sits in and reports the loss per document-length range; summed over the ranges it is the
overall loss.  Per-token losses come from the model's one per-token loss primitive
(``flexbert/model/loss.py``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from streaming.base.util import clean_stale_shared_memory
from tqdm import tqdm

from flexbert.config import ConfigError, from_dict
from flexbert.data.config import DataConfig
from flexbert.data.length_buckets import DEFAULT_LENGTH_BOUNDS, bucket_names
from flexbert.data.loader import build_eval_loader
from flexbert.data.masking import OBJECTIVES
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.source import data_fingerprint, tokenizer_dir
from flexbert.data.stream_config import StreamConfig, stream_tokens
from flexbert.data.tokenizer import SpecialTokens
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.registry import unknown_choice
from flexbert.train.composer_model import eval_metrics, row_outputs
from flexbert.weights.load import ModelLoadError, load_model


# --------------------------------------------------------------------------- the data
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
                run_data: Optional[dict] = None) -> DataConfig:
    """The eval loader's DataConfig: the run's data section (same row shape and packing as its own
    evaluation) with the shards, split, rate and seed given here; else the shards' row length."""
    d = {k: v for k, v in (run_data or {}).items() if k not in ("remote", "tokenizer")}
    d.update(local=shards, eval_split=split, eval_mlm_probability=mlm_probability, eval_seed=seed, num_workers=0)
    d["max_seq_len"] = int(max_seq_len or d.get("max_seq_len") or shard_max_seq_len(shards) or 1024)
    d["microbatch_size"] = int(rows_of or d.get("microbatch_size") or 8)
    for key in ("global_batch_size", "batch_size_warmup_min", "batch_size_warmup_tokens"):
        d.pop(key, None)  # training step shape: irrelevant here, and must not contradict microbatch_size
    if tokenizer:
        d["tokenizer"] = tokenizer
    return from_dict(DataConfig, d, "data")


def check_model_tokenizer(loaded, data_cfg: DataConfig, name: str) -> None:
    """The model (a flexbert.weights.load.LoadedModel) must have been trained with the shards'
    tokenizer, when both are known, and its embeddings must cover the shards' ids (one line)."""
    fp = data_fingerprint(data_cfg)
    try:
        size = SpecialTokens.from_dir(tokenizer_dir(data_cfg)).vocab_size
    except (FileNotFoundError, OSError):
        size = None
    loaded.check_tokenizer(fp, name, size)


def mlm_loader(data_cfg: DataConfig, objective: str = "mlm"):
    """The evaluation loader of ``data_cfg`` (stale shared memory of earlier loaders cleared);
    ``objective: clm`` labels each row's next tokens instead of masking."""
    clean_stale_shared_memory()
    return build_eval_loader(data_cfg, objective=objective)


# --------------------------------------------------------------------------- the loop
def _to(row: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in row.items()}


class _ByLength:
    """Per document-length range sums of one evaluation: documents, masked tokens, loss, hits."""

    def __init__(self, bounds: Sequence[int], device):
        self.names = bucket_names(bounds)
        self.edges = torch.tensor(list(bounds), device=device)
        self.loss, self.hits, self.masked, self.docs = (
            torch.zeros(len(self.names), dtype=torch.float64, device=device) for _ in range(4))

    def add(self, model, row: dict[str, Any], causal: bool = False) -> None:
        cu = row["cu_seqlens"].long()
        bucket = torch.bucketize(cu[1:] - cu[:-1], self.edges, right=True)
        real = cu[:-1] < int(row.get("num_tokens", cu[-1]))  # documents, not the padding tail's segments
        self.docs.index_add_(0, bucket[real], torch.ones(int(real.sum()), dtype=torch.float64, device=cu.device))
        loss, hit, pos = model.token_losses(row["input_ids"], row["labels"], cu_seqlens=row["cu_seqlens"],
                                            max_seqlen=int(row["max_seqlen"]), causal=causal)
        seg = bucket[torch.searchsorted(cu[1:], pos, right=True)]
        self.loss.index_add_(0, seg, loss.double())
        self.hits.index_add_(0, seg, hit.double())
        self.masked.index_add_(0, seg, torch.ones_like(loss, dtype=torch.float64))

    def rows(self) -> list[dict]:
        return [{"range": n, "documents": int(d), "masked_tokens": int(m), "loss": float(s / m) if m else None,
                 "accuracy": float(a / m) if m else None}
                for n, d, m, s, a in zip(self.names, self.docs, self.masked, self.loss, self.hits)]


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, loader, max_batches: Optional[int] = None, device="cpu", shapes=None,
                 bounds: Optional[Sequence[int]] = None, causal: bool = False, progress: bool = False,
                 total_tokens: Optional[int] = None) -> dict:
    """``{"loss", "accuracy", "perplexity", "masked_tokens", "rows"}`` of ``model`` (a
    FlexBertForMaskedLM) over an eval loader's batches (all, or the first ``max_batches``, as
    Composer's ``eval_subset_num_batches``); with ``bounds`` (where length ranges end, in tokens)
    also ``"by_length"``: per range documents, masked tokens, loss and accuracy.  ``causal``: a CLM
    model on a CLM loader's rows (``mlm_loader(..., "clm")``): the next-token loss, every call causal.
    ``progress``: a bar on stderr counting tokens (of ``total_tokens``, the split's, when known: an ETA)."""
    metrics = eval_metrics()
    model = model.to(device).eval()
    groups = _ByLength(bounds, device) if bounds else None
    rows = 0
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="eval-mlm", disable=not progress, file=sys.stderr,
               leave=False)
    for i, batch in enumerate(loader):
        if max_batches is not None and max_batches >= 0 and i >= max_batches:
            break
        bar.update(sum(int(r["num_tokens"]) for r in batch["rows"]))
        for row in batch["rows"]:
            row = _to(row, device)
            stats = row_outputs(model, row, shapes, causal).stats
            for m in metrics.values():
                m.update(stats)
            if groups is not None:
                groups.add(model, row, causal)
            rows += 1
    bar.close()
    if not rows or int(metrics["MLMLoss"].count) == 0:
        raise ValueError("no masked tokens to evaluate (empty eval split?)")
    loss = float(metrics["MLMLoss"].compute())
    out = {"loss": loss, "accuracy": float(metrics["MLMAccuracy"].compute()), "perplexity": math.exp(loss),
           "masked_tokens": int(metrics["MLMLoss"].count), "rows": rows}
    if groups is not None:
        out["by_length"] = groups.rows()
    return out


def format_by_length(rows: list[dict]) -> str:
    """The per-length table as text (one line per range)."""
    lines = [f"  {'document length':<18} {'documents':>10} {'masked tokens':>14} {'loss':>8} {'accuracy':>9}"]
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        lines.append(f"  {r['range']:<18} {r['documents']:>10,} {r['masked_tokens']:>14,} {loss:>8} {acc:>9}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the evaluation
@dataclass
class MlmEvalConfig:
    model: str = ""  # run folder, checkpoint or Hugging Face folder
    data: str = ""  # MDS shard folder
    split: str = "validation"
    mlm_probability: float = 0.15  # a training run's own evaluation masks 15%
    seed: int = 1234  # ... with this mask seed
    max_seq_len: Optional[int] = None  # default: the run's, else the shards' (stats.json)
    rows_of: Optional[int] = None  # sequences per packed row (default: the run's, else 8)
    tokenizer: Optional[str] = None  # default: the copy inside the shard folder
    max_batches: Optional[int] = None  # only the first N batches
    device: str = "cpu"
    objective: str = "mlm"  # clm: the next-token loss with causal attention (a CLM phase's own evaluation)
    progress: bool = True  # a bar on stderr (tokens evaluated of the split's, with an ETA)
    by_length: Optional[list[int]] = None  # [] = DEFAULT_LENGTH_BOUNDS; where document-length ranges end
    out: Optional[str] = None  # write OUT/result.json
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        for key in ("model", "data"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required")
        if self.objective not in OBJECTIVES:
            raise ConfigError(unknown_choice("objective", "value", self.objective, OBJECTIVES))
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability: must be in (0, 1), got {self.mlm_probability}")
        for key in ("max_seq_len", "rows_of", "max_batches"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")


@evaluation("mlm", MlmEvalConfig)
def evaluate_shards(cfg: MlmEvalConfig) -> Result:
    """Held-out MLM loss, accuracy and perplexity of ``cfg.model`` on ``cfg.data``'s split."""
    if cfg.out:
        check_output_dir(cfg.out, [cfg.model, cfg.data])
    if not os.path.isdir(os.path.join(cfg.data, cfg.split)):
        raise ModelLoadError(f"--data {cfg.data}: no '{cfg.split}' split folder (MDS shards from `flexbert tokenize`)")
    loaded = load_model(cfg.model, "mlm")
    data_cfg = data_config(cfg.data, cfg.split, cfg.mlm_probability, cfg.seed, cfg.max_seq_len, cfg.rows_of,
                           cfg.tokenizer, loaded.data)
    check_model_tokenizer(loaded, data_cfg, f"shards {cfg.data}")
    bounds = (sorted(set(cfg.by_length)) or list(DEFAULT_LENGTH_BOUNDS)) if cfg.by_length is not None else None
    total = stream_tokens(StreamConfig(local=cfg.data), cfg.split) if cfg.max_batches is None else None
    out = evaluate_mlm(loaded.model, mlm_loader(data_cfg, cfg.objective), cfg.max_batches, cfg.device, bounds=bounds,
                       causal=cfg.objective == "clm", progress=cfg.progress, total_tokens=total)
    if cfg.out:
        prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.data])
    metrics = {k: out[k] for k in ("loss", "accuracy", "perplexity")}
    details = {k: out[k] for k in ("masked_tokens", "rows", "by_length") if k in out}
    return Result("mlm", loaded.ref(), settings_of(cfg), {cfg.split: metrics}, details)
