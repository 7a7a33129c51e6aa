"""The held-out MLM evaluation: one forward per packed row, metrics from the loss's own counts.

The one place the MLM loss of a row and its metrics are computed outside the training step:
training's Composer evaluator (``FlexBertMLM.eval_forward`` -> ``row_outputs``; the metrics
below), ``scripts/eval_mlm.py`` and the phase chain (``evaluate_mlm``) all go through it, so they
agree to the last digit on the same rows.  Plain torch + torchmetrics: no Composer here.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torchmetrics import Metric

from flexbert.model.loss import LossStats

EVAL_METRICS = ("MLMLoss", "MLMAccuracy", "MLMPerplexity")


# Every metric updates from the counts the loss computed in the same pass (``MaskedLMOutput.stats``:
# loss sum, correct argmax predictions, predicted tokens), so no logits outlive the loss.
class MLMAccuracy(Metric):
    """Share of masked tokens whose argmax prediction is the original token."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, stats: LossStats) -> None:
        self.correct += stats.correct.detach().long()
        self.count += stats.count.detach().long()

    def compute(self) -> torch.Tensor:
        return self.correct.double().div(self.count.clamp(min=1)).float()


class MLMLoss(Metric):
    """Mean cross-entropy over all masked tokens seen (not a mean of batch means)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, stats: LossStats) -> None:
        self.loss_sum += stats.loss_sum.detach().double()
        self.count += stats.count.detach().long()

    def compute(self) -> torch.Tensor:
        return (self.loss_sum / self.count.clamp(min=1)).float()


class MLMPerplexity(MLMLoss):
    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


def eval_metrics() -> dict[str, Metric]:
    return {"MLMLoss": MLMLoss(), "MLMAccuracy": MLMAccuracy(), "MLMPerplexity": MLMPerplexity()}


def row_outputs(model: torch.nn.Module, row: dict[str, Any], shapes=None):
    """``FlexBertForMaskedLM`` on one packed row: loss and counts, no logits.  ``shapes``
    (flexbert/model/static.py) pads the row to the fixed shapes a compiled model was traced with."""
    if shapes is not None:
        shape_args = shapes.row_inputs(row)
    else:
        shape_args = dict(cu_seqlens=row["cu_seqlens"], max_seqlen=int(row["max_seqlen"]))
    return model(input_ids=row["input_ids"], labels=row["labels"], return_logits=False, **shape_args)


def _to(row: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in row.items()}


@torch.no_grad()
def evaluate_mlm(model: torch.nn.Module, loader, max_batches: Optional[int] = None, device="cpu", shapes=None) -> dict:
    """{"loss", "accuracy", "perplexity", "masked_tokens", "rows"} of ``model`` (a
    FlexBertForMaskedLM) over an eval loader's batches (all, or the first ``max_batches``, as
    Composer's ``eval_subset_num_batches``)."""
    metrics = eval_metrics()
    model = model.to(device).eval()
    rows = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and max_batches >= 0 and i >= max_batches:
            break
        for row in batch["rows"]:
            stats = row_outputs(model, _to(row, device), shapes).stats
            for m in metrics.values():
                m.update(stats)
            rows += 1
    if not rows or int(metrics["MLMLoss"].count) == 0:
        raise ValueError("no masked tokens to evaluate (empty eval split?)")
    loss = float(metrics["MLMLoss"].compute())
    return {"loss": loss, "accuracy": float(metrics["MLMAccuracy"].compute()), "perplexity": math.exp(loss),
            "masked_tokens": int(metrics["MLMLoss"].count), "rows": rows}


DEFAULT_LENGTH_BOUNDS = (128, 512, 2048)


def _row_token_losses(model, row: dict[str, Any], chunk: int = 4096):
    """(per-token loss, per-token hit, the token positions) of a row's masked tokens: the encoder,
    then head and decoder on the masked positions only, in chunks (no full-vocabulary logits)."""
    h = model.model(row["input_ids"], cu_seqlens=row["cu_seqlens"], max_seqlen=int(row["max_seqlen"]))
    pos = (row["labels"] != -100).nonzero().flatten()
    losses, hits = [], []
    for s in range(0, pos.numel(), chunk):
        p = pos[s: s + chunk]
        logits = model.decoder(model.head(h[p])).float()
        target = row["labels"][p]
        losses.append(torch.nn.functional.cross_entropy(logits, target, reduction="none"))
        hits.append(logits.argmax(-1) == target)
    empty = torch.zeros(0, device=h.device)
    return (torch.cat(losses) if losses else empty), (torch.cat(hits) if hits else empty.bool()), pos


@torch.no_grad()
def evaluate_mlm_by_length(model: torch.nn.Module, loader, bounds=DEFAULT_LENGTH_BOUNDS,
                           max_batches: Optional[int] = None, device="cpu") -> list[dict]:
    """Per document-length range (``bounds``: where ranges end, in tokens): documents, masked
    tokens, mean MLM loss and accuracy.  Each masked token counts for the document (packed
    segment) it sits in; summed over the ranges, the loss is ``evaluate_mlm``'s on the same rows."""
    from flexbert.data.length_buckets import bucket_names

    names = bucket_names(bounds)
    edges = torch.tensor(list(bounds), device=device)
    loss_sum, hits, masked, docs = (torch.zeros(len(names), dtype=torch.float64, device=device) for _ in range(4))
    model = model.to(device).eval()
    for i, batch in enumerate(loader):
        if max_batches is not None and max_batches >= 0 and i >= max_batches:
            break
        for row in batch["rows"]:
            row = _to(row, device)
            cu = row["cu_seqlens"].long()
            lengths = cu[1:] - cu[:-1]
            bucket = torch.bucketize(lengths, edges, right=True)
            real = cu[:-1] < int(row.get("num_tokens", cu[-1]))  # documents, not the padding tail's segments
            docs.index_add_(0, bucket[real], torch.ones(int(real.sum()), dtype=torch.float64, device=device))
            tok_loss, tok_hit, pos = _row_token_losses(model, row)
            seg = torch.searchsorted(cu[1:], pos, right=True)
            loss_sum.index_add_(0, bucket[seg], tok_loss.double())
            hits.index_add_(0, bucket[seg], tok_hit.double())
            masked.index_add_(0, bucket[seg], torch.ones_like(tok_loss, dtype=torch.float64))
    return [{"range": n, "documents": int(d), "masked_tokens": int(m), "loss": float(s / m) if m else None,
             "accuracy": float(a / m) if m else None} for n, d, m, s, a in zip(names, docs, masked, loss_sum, hits)]


def format_by_length(rows: list[dict]) -> str:
    """The per-length table as text (one line per range)."""
    lines = [f"  {'document length':<18} {'documents':>10} {'masked tokens':>14} {'loss':>8} {'accuracy':>9}"]
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        lines.append(f"  {r['range']:<18} {r['documents']:>10,} {r['masked_tokens']:>14,} {loss:>8} {acc:>9}")
    return "\n".join(lines)
