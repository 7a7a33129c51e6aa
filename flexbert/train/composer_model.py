"""Composer adapter for the MLM model: one packed row per microbatch, exact token-mean loss.

The loader yields a device batch ``{"rows": [row, ...]}`` (docs/internals.md).  Composer splits
it into microbatches with ``split_batch`` (one row each) and scales each microbatch's loss by
``num_samples(row) / num_samples(batch)``.  Making "samples" the number of *masked tokens* turns
that scaling into the exact mean over every masked token of the step, across rows and ranks --
the reference weighted row means by sequence count instead (facts §4).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from composer.core import DataSpec, Time, TimeUnit
from composer.models import ComposerModel
from torchmetrics import Metric

from flexbert.config import parse_time
from flexbert.data.batch import num_masked, num_real_tokens, rows_of
from flexbert.model.config import FlexBertConfig
from flexbert.model.loss import LossStats
from flexbert.model.model import FlexBertForMaskedLM
from flexbert.model.static import StaticShapes

# --------------------------------------------------------------------------- metrics
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


def row_outputs(model: torch.nn.Module, row: dict[str, Any], shapes=None, causal: bool = False, teacher=None):
    """``FlexBertForMaskedLM`` on one packed row: loss and counts, no logits.  ``shapes``
    (flexbert/model/static.py) pads the row to the fixed shapes a compiled model was traced with;
    ``causal``: CLM attention (``objective: clm``, the row's labels its next tokens); ``teacher``
    (flexbert/train/pretrained.py): the loss adds the distillation term."""
    if shapes is not None:
        shape_args = shapes.row_inputs(row)
    else:
        shape_args = dict(cu_seqlens=row["cu_seqlens"], max_seqlen=int(row["max_seqlen"]))
    if teacher is not None:
        return teacher.outputs(model, row, shape_args, causal)
    return model(input_ids=row["input_ids"], labels=row["labels"], return_logits=False, causal=causal, **shape_args)


# --------------------------------------------------------------------------- model
class FlexBertMLM(ComposerModel):
    """``FlexBertForMaskedLM`` as a ComposerModel; ``forward`` takes one packed row.

    ``shapes`` (flexbert/model/static.py) pads each row to fixed shapes at this boundary, so a
    compiled model traces once; without it rows go in as they come (eager use, tests).  ``causal``:
    every call, training and evaluation, with causal attention (``objective: clm``).  ``teacher``
    (set by the run's builder, flexbert/train/pretrained.py): training rows add the distillation loss;
    evaluation measures the student alone."""

    def __init__(self, config: FlexBertConfig, model: torch.nn.Module | None = None, train_metrics: bool = True,
                 shapes: StaticShapes | None = None, causal: bool = False):  # fmt: skip
        super().__init__()
        if model is None:
            model = FlexBertForMaskedLM(config)
        self.config = config
        self.model = model
        self.shapes = shapes
        self.causal = causal
        self.teacher = None  # a plain attribute: the teacher is not a submodule (no checkpoint, optimizer, DDP)
        # train: accuracy only (the train loss is already logged as loss/train/total)
        self._train_metrics = {"MLMAccuracy": MLMAccuracy()} if train_metrics else {}
        self._eval_metrics = eval_metrics()

    @property
    def encoder(self) -> torch.nn.Module:
        """The FlexBertModel inside (where activation checkpointing and compile apply)."""
        return self.model.model

    def forward(self, batch: dict[str, Any]):
        if "rows" in batch:
            raise ValueError("FlexBertMLM.forward takes one row; split the batch with flexbert_data_spec")
        return row_outputs(self.model, batch, self.shapes, self.causal, self.teacher if self.training else None)

    def loss(self, outputs, batch):
        """The loss; with a teacher a dict (``total`` and its terms, logged as loss/train/<term>)."""
        terms = getattr(outputs, "terms", None)
        return {"total": outputs.loss, **terms} if terms else outputs.loss

    def eval_forward(self, batch, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self._train_metrics if is_train else self._eval_metrics

    def update_metric(self, batch, outputs, metric: Metric) -> None:
        metric.update(outputs.stats)


# --------------------------------------------------------------------------- data spec
# "Microbatch" means one thing in FlexBERT: one packed row, i.e. one forward/backward.  A row holds
# ``data.microbatch_size`` sequences' worth of tokens (``row_tokens``), and Composer's
# ``device_train_microbatch_size`` / ``device_eval_microbatch_size`` are therefore always 1 (row).
def split_rows(batch: dict[str, Any], microbatch_size: int | float | None = None) -> Sequence[dict]:
    """The rows of a device batch are its microbatches; ``microbatch_size`` counts rows and must be 1."""
    if microbatch_size not in (None, 1):
        raise ValueError(f"device microbatch size must be 1 (one packed row per microbatch), got {microbatch_size}; "
                         "set data.microbatch_size for sequences per row")
    return rows_of(batch)


def flexbert_data_spec(dataloader) -> DataSpec:
    """Wrap a FlexBERT loader so Composer splits rows and counts masked tokens / real tokens."""
    return DataSpec(
        dataloader,
        split_batch=split_rows,
        get_num_samples_in_batch=num_masked,
        get_num_tokens_in_batch=lambda b: {"total": num_real_tokens(b), "loss_generating": num_masked(b)},
    )


# --------------------------------------------------------------------------- time
def to_composer_time(value: Any, key: str = "time"):
    """A time string (flexbert/config.py ``parse_time``) as a ``composer.core.Time``."""
    number, unit = parse_time(value, key)
    units = {"tok": TimeUnit.TOKEN, "ba": TimeUnit.BATCH, "sp": TimeUnit.SAMPLE, "ep": TimeUnit.EPOCH}
    if unit == "dur":
        return Time(float(number), TimeUnit.DURATION)
    return Time(int(number), units[unit])
