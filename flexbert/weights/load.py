"""Find the weights, config and tokenizer behind ``--model M`` for evaluation and fine-tuning.

M is one of:

* a train.py run folder (``config.yaml`` + ``checkpoints/``): its newest intact checkpoint;
* a Composer checkpoint file (``RUN/checkpoints/baN.pt``, or anywhere: it carries its config);
* a Hugging Face ModernBERT folder (``config.json`` + safetensors), as ``scripts/export_hf.py``
  writes it or as ModernBERT is released; a ``ModernBertForSequenceClassification`` folder too.

Run folders and checkpoints are read through the run folder (flexbert/train/run_folder.py: the
config a checkpoint was trained with, its weights after the integrity check), Hugging Face folders
through the converter.  Weight tiling, merging and retrieval evaluation read their sources here too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

import torch

from flexbert.errors import FlexBertError
from flexbert.config import ConfigError
from flexbert.data.source import tokenizer_dir
from flexbert.model.config import FlexBertConfig
from flexbert.train.run_folder import (RunFolder, RunFolderError, checkpoint_config, identity, load_checkpoint,
                                       load_weights, model_state)


class ModelLoadError(FlexBertError, ValueError):
    """``--model`` cannot be used; one line naming the path and why."""


@dataclass
class Pretrained:
    config: FlexBertConfig
    state: dict[str, torch.Tensor]  # FlexBERT names: an MLM model's or a classifier's
    tokenizer_dir: Optional[str]
    kind: str  # run | checkpoint | hf
    path: str
    label_names: Optional[list[str]] = None  # a classification folder's id2label, in id order
    data: Optional[dict] = None  # a run's data section (shards, tokenizer)
    tokenizer_fingerprint: Optional[str] = None  # what it was trained with, where known (flexbert/data/fingerprint.py)

    def check_tokenizer(self, fingerprint: Optional[str], other: str, size: Optional[int] = None) -> None:
        """Refuse (one line naming both) a tokenizer or shards written with another tokenizer than
        this model's, or one with more ids than its embeddings hold."""
        from flexbert.data.fingerprint import check_same

        check_same(self.tokenizer_fingerprint, f"model {self.path}", fingerprint, other)
        if size is not None and size > self.config.vocab_size:
            raise ModelLoadError(f"{other} has {size} tokens, more than model {self.path}'s vocabulary "
                                 f"(vocab_size={self.config.vocab_size})")


def _from_run(path: str, kind: str) -> Pretrained:
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
    return Pretrained(cfg.model, model_state(ckpt), tok, kind, checkpoint, data=dataclasses.asdict(cfg.data),
                      tokenizer_fingerprint=identity(ckpt).get("tokenizer"))


def _from_hf(path: str) -> Pretrained:
    from flexbert.convert.hf import ConversionError, read_hf_folder

    try:
        cfg, tensors, label_names = read_hf_folder(path)
    except (ConversionError, OSError) as e:
        raise ModelLoadError(f"--model {path}: {e}") from None
    from flexbert.data.fingerprint import tokenizer_fingerprint

    tok = path if os.path.exists(os.path.join(path, "tokenizer.json")) else None
    return Pretrained(cfg, tensors, tok, "hf", path, label_names, tokenizer_fingerprint=tokenizer_fingerprint(tok) if tok else None)


def load_pretrained(path: str) -> Pretrained:
    if not os.path.exists(path):
        raise ModelLoadError(f"--model {path}: does not exist")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "config.json")):
            return _from_hf(path)
        if RunFolder(path).has_config():
            return _from_run(path, "run")
        raise ModelLoadError(f"--model {path}: neither a run folder (config.yaml) nor a Hugging Face folder (config.json)")
    return _from_run(path, "checkpoint")


def _load(model: torch.nn.Module, state: dict, what: str, allow_missing: tuple[str, ...] = ()) -> None:
    try:
        load_weights(model, state, what, allow_missing)
    except RunFolderError as e:
        raise ModelLoadError(str(e)) from None


def mlm_model(pre: Pretrained):
    """A FlexBertForMaskedLM with the pretrained weights (eval mode)."""
    from flexbert.model.model import FlexBertForMaskedLM

    if any(k.startswith("classifier.") for k in pre.state):
        raise ModelLoadError(f"--model {pre.path}: a classification model has no MLM head")
    model = FlexBertForMaskedLM(pre.config)
    state = dict(pre.state)
    if pre.config.tie_word_embeddings:
        state.pop("decoder.weight", None)
    _load(model, state, pre.path, ("decoder.weight",) if pre.config.tie_word_embeddings else ())
    model.tie_weights()
    return model.eval()


def classifier_model(pre: Pretrained, num_labels: int, **overrides):
    """A FlexBertForSequenceClassification: encoder (and head, as transformers loads it) from the
    pretrained weights, a fresh classifier unless the source is a classifier with ``num_labels``."""
    from flexbert.model.model import FlexBertForSequenceClassification

    cfg = dataclasses.replace(pre.config, num_labels=num_labels, **overrides)
    model = FlexBertForSequenceClassification(cfg)
    keep = {k: v for k, v in pre.state.items() if k.startswith(("model.", "head."))}
    src_cls = {k: v for k, v in pre.state.items() if k.startswith("classifier.")}
    if src_cls and src_cls["classifier.weight"].shape[0] == num_labels:
        keep.update(src_cls)
    _load(model, keep, pre.path, ("classifier.",))
    return model
