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
