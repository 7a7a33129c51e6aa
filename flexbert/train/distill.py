"""Distillation from a trained teacher: ``teacher: {model, temperature, weight}`` in the run config.

The teacher is loaded once per start through flexbert/train/pretrained.py (a run folder, a
checkpoint or a Hugging Face folder: what ``--model`` means everywhere), put in eval mode with its
parameters frozen, and kept out of the student's module tree: it is in no checkpoint, no optimizer
and no DDP/FSDP wrapper, and every rank holds a whole copy.  It must have been trained with the
run's tokenizer (fingerprints compared) and have the student's vocabulary size.

For each training row the student's lean forward returns its head output at the predicted
positions (``MaskedLMOutput.states``: the masked tokens with sparse prediction); the teacher runs
once on the same row, without gradient, and its head output is gathered at the same positions
(``predicted_states``); the loss is::

    (1 - weight) * CE(student, labels) + weight * T^2 * KL(teacher_T || student_T)

with both distributions at temperature T and both terms means over the predicted tokens
(flexbert/model/loss.py ``distill_kl``: chunked, no full logits kept).  The two terms are logged as
``loss/train/ce`` and ``loss/train/kl`` beside ``loss/train/total`` (flexbert/train/metric_keys.py).
Evaluation measures the student alone.  The teacher is deterministic (eval mode), so a resumed run
sees the same teacher outputs as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from flexbert.data.fingerprint import TokenizerMismatchError, check_same
from flexbert.model.loss import distill_kl
from flexbert.model.model import FlexBertForMaskedLM, MaskedLMOutput
from flexbert.train import metric_keys as K
from flexbert.train.config import TeacherConfig
from flexbert.train.loading import SetupError
from flexbert.train.pretrained import ModelLoadError, load_pretrained, mlm_model


@dataclass
class DistilledOutput(MaskedLMOutput):
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # loss term name -> value (metric_keys.LOSS_TERMS)


class Teacher:
    """A frozen FlexBertForMaskedLM and the distillation settings; not an nn.Module attribute of
    the student (see the module docstring)."""

    def __init__(self, model: FlexBertForMaskedLM, temperature: float, weight: float, path: str = ""):
        self.model = model.eval().requires_grad_(False)
        self.temperature, self.weight, self.path = temperature, weight, path

    def _follow(self, like: torch.Tensor) -> None:
        p = next(self.model.parameters())
        if p.device != like.device:
            self.model.to(like.device)

    def outputs(self, student: FlexBertForMaskedLM, row: dict[str, Any], shape_args: dict, causal: bool) -> DistilledOutput:
        """The student's lean forward on ``row`` with the distillation loss (see the module docstring)."""
        out = student(input_ids=row["input_ids"], labels=row["labels"], return_logits=False, causal=causal, **shape_args)
        self._follow(row["input_ids"])
        with torch.no_grad():
            teacher_h, _ = self.model.predicted_states(row["input_ids"], row["labels"], causal=causal,
                                                       sparse=student.config.sparse_prediction, **shape_args)
        t = self.temperature
        kl_sum = distill_kl(out.states, student.decoder.weight, student.decoder.bias, teacher_h,
                            self.model.decoder.weight, self.model.decoder.bias, out.labels, t)
        count = out.stats.count.clamp(min=1)
        ce, kl = out.stats.loss, kl_sum / count
        total = (1.0 - self.weight) * ce + self.weight * t * t * kl
        return DistilledOutput(total, None, out.labels, out.stats, out.states, {K.CE_TERM: ce, K.KL_TERM: kl})


def load_teacher(cfg: Optional[TeacherConfig], fingerprint: Optional[str], vocab_size: int) -> Optional[Teacher]:
    """The teacher a run config names (None without one); SetupError in one line naming
    ``teacher.model`` when it cannot be read, was trained with another tokenizer, or has another
    vocabulary size than the student."""
    if cfg is None:
        return None
    try:
        loaded = load_pretrained(cfg.model)
        model = mlm_model(loaded)
    except ModelLoadError as e:
        raise SetupError(f"teacher.model: {str(e).replace('--model ', '', 1)}") from None
    try:
        check_same(loaded.tokenizer_fingerprint, cfg.model, fingerprint, "the run's data")
    except TokenizerMismatchError as e:
        raise SetupError(f"teacher.model: {e}") from None
    if loaded.config.vocab_size != vocab_size:
        raise SetupError(f"teacher.model: {cfg.model} has vocab_size {loaded.config.vocab_size}, the student "
                         f"{vocab_size}; distillation compares distributions over the same vocabulary")
    return Teacher(model, cfg.temperature, cfg.weight, loaded.path)
