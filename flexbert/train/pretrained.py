"""A trained model behind a reference: what ``--model M`` means below the weight tools, and the
piece of it training needs too, a distillation teacher.

M is a train.py run folder (its newest intact checkpoint), one Composer checkpoint file (it
carries its config), or a Hugging Face ModernBERT folder.  ``load_pretrained(M)`` returns a
``LoadedModel`` (config, weights in FlexBERT names, the tokenizer folder and fingerprint it was
trained with); ``mlm_model`` builds the MLM module from it.  The heads every other tool asks for
(classifier, sentence-transformers encoder) and ``load_model`` are flexbert/weights/load.py's.

Run folders and checkpoints are read through the run folder (flexbert/train/run_folder.py: the
config a checkpoint was trained with, its weights after the integrity check), Hugging Face folders
through the converter (every safetensors file checked against its recorded checksum).

Distillation from a trained teacher: ``teacher: {model, temperature, weight}`` in the run config.

The teacher is loaded once per start by ``load_pretrained`` above (a run folder, a checkpoint or a Hugging Face folder: what ``--model`` means everywhere), put in eval mode with its
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

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from flexbert.config import ConfigError
from flexbert.convert.hf import ConversionError, read_hf_folder
from flexbert.data.fingerprint import TokenizerMismatchError, check_same, tokenizer_fingerprint
from flexbert.data.source import tokenizer_dir
from flexbert.errors import FlexBertError
from flexbert.model.config import FlexBertConfig
from flexbert.model.loss import distill_kl
from flexbert.model.model import FlexBertForMaskedLM, MaskedLMOutput
from flexbert.train import metric_keys as K
from flexbert.train.config import SetupError, TeacherConfig
from flexbert.train.run_folder import (
    RunFolder,
    RunFolderError,
    checkpoint_config,
    identity,
    load_checkpoint,
    load_weights,
    model_state,
)


class ModelLoadError(FlexBertError, ValueError):
    """``--model`` cannot be used; one line naming the path and why."""


@dataclass
class LoadedModel:
    config: Optional[FlexBertConfig]  # None for a sentence-transformers folder of another architecture
    state: dict[str, torch.Tensor]  # FlexBERT names: an MLM model's or a classifier's
    tokenizer_dir: Optional[str]
    kind: str  # run | checkpoint | hf | sentence-transformers
    path: str
    label_names: Optional[list[str]] = None  # a classification folder's id2label, in id order
    data: Optional[dict] = None  # a run's data section (shards, tokenizer)
    tokenizer_fingerprint: Optional[str] = None  # what it was trained with, where known (flexbert/data/fingerprint.py)
    model: Any = None  # the module ``head`` asked for
    given: str = ""  # what ``--model`` said (a run folder's ``path`` is its newest checkpoint)

    def check_tokenizer(self, fingerprint: Optional[str], other: str, size: Optional[int] = None) -> None:
        """Refuse (one line naming both) a tokenizer or shards written with another tokenizer than
        this model's, or one with more ids than its embeddings hold."""
        check_same(self.tokenizer_fingerprint, f"model {self.path}", fingerprint, other)
        if size is not None and self.config is not None and size > self.config.vocab_size:
            raise ModelLoadError(f"{other} has {size} tokens, more than model {self.path}'s vocabulary "
                                 f"(vocab_size={self.config.vocab_size})")

    def ref(self, **extra) -> dict:
        """What a result file records about the model it evaluated: the reference given, the file
        read, its kind and tokenizer."""
        return {"ref": self.given or self.path, "path": self.path, "kind": self.kind,
                "tokenizer_fingerprint": self.tokenizer_fingerprint, **extra}


# --------------------------------------------------------------------------- reading the weights
def _from_run(path: str, kind: str) -> LoadedModel:
    """A run folder (its newest intact checkpoint) or one checkpoint file, through the run folder."""
    try:
        if kind == "run":
            run = RunFolder(path)
            cfg = run.load_config()
            checkpoint = run.newest_checkpoint(cfg)
            ckpt = load_checkpoint(checkpoint)
        else:
            checkpoint = path
            ckpt = load_checkpoint(checkpoint)
            cfg = checkpoint_config(checkpoint, ckpt)
    except (RunFolderError, ConfigError) as e:
        raise ModelLoadError(f"--model {path}: {e}") from None
    try:
        tok = tokenizer_dir(cfg.data)
    except FileNotFoundError:  # the run's data may have moved; the caller can pass one
        tok = None
    return LoadedModel(cfg.model, model_state(ckpt), tok, kind, checkpoint, data=dataclasses.asdict(cfg.data),
                       tokenizer_fingerprint=identity(ckpt).get("tokenizer"))


def _from_hf(path: str) -> LoadedModel:
    try:
        cfg, tensors, label_names = read_hf_folder(path)
    except (ConversionError, OSError) as e:
        raise ModelLoadError(f"--model {path}: {e}") from None
    tok = path if os.path.exists(os.path.join(path, "tokenizer.json")) else None
    return LoadedModel(cfg, tensors, tok, "hf", path, label_names, tokenizer_fingerprint=tokenizer_fingerprint(tok) if tok else None)


def load_pretrained(path: str) -> LoadedModel:
    """The weights, config and tokenizer behind ``--model path`` (no module built)."""
    loaded = _read(path)
    loaded.given = path
    return loaded


def _read(path: str) -> LoadedModel:
    if not os.path.exists(path):
        raise ModelLoadError(f"--model {path}: does not exist (give a run folder, a checkpoint or a Hugging Face folder)")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "config.json")):
            return _from_hf(path)
        if RunFolder(path).has_config():
            return _from_run(path, "run")
        raise ModelLoadError(f"--model {path}: neither a run folder (config.yaml) nor a Hugging Face folder (config.json)")
    return _from_run(path, "checkpoint")


# --------------------------------------------------------------------------- the heads
def load_state(model: torch.nn.Module, state: dict, what: str, allow_missing: tuple[str, ...] = ()) -> None:
    try:
        load_weights(model, state, what, allow_missing)
    except RunFolderError as e:
        raise ModelLoadError(str(e)) from None


def mlm_model(pre: LoadedModel) -> FlexBertForMaskedLM:
    """A FlexBertForMaskedLM with the pretrained weights (eval mode)."""
    if any(k.startswith("classifier.") for k in pre.state):
        raise ModelLoadError(f"--model {pre.path}: a classification model has no MLM head")
    model = FlexBertForMaskedLM(pre.config)
    state = dict(pre.state)
    if pre.config.tie_word_embeddings:
        state.pop("decoder.weight", None)
    load_state(model, state, pre.path, ("decoder.weight",) if pre.config.tie_word_embeddings else ())
    model.tie_weights()
    return model.eval()


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
