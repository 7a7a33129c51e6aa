"""Find the weights, config and tokenizer behind ``--model M`` for evaluation and fine-tuning.

M is one of:

* a train.py run folder (``config.yaml`` + ``checkpoints/``): its newest intact checkpoint;
* a Composer checkpoint file (``RUN/checkpoints/baN.pt``; the config is ``RUN/config.yaml``);
* a Hugging Face ModernBERT folder (``config.json`` + safetensors), as ``scripts/export_hf.py``
  writes it or as ModernBERT is released; a ``ModernBertForSequenceClassification`` folder too.

The checkpoint reading and the HF mapping are the exporter's and converter's own functions.  Weight
tiling (``flexbert/model/tiling.py``) reads its source through here too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

import torch

from flexbert.config import FlexBertConfig


class ModelLoadError(ValueError):
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


def _from_run(path: str, checkpoint: Optional[str], kind: str) -> Pretrained:
    from flexbert.train.config import load_run_config
    from flexbert.train.export import ExportError, checkpoint_model_state, newest_checkpoint

    run_dir = path if kind == "run" else os.path.dirname(os.path.dirname(os.path.abspath(path)))
    config = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(config):
        raise ModelLoadError(f"--model {path}: no config.yaml in the run folder {run_dir} (train.py writes it)")
    cfg = load_run_config(config)
    try:
        checkpoint = checkpoint or newest_checkpoint(run_dir)
        state = checkpoint_model_state(checkpoint)
    except ExportError as e:
        raise ModelLoadError(f"--model {path}: {e}") from None
    try:
        tok = cfg.data.tokenizer_dir()
    except Exception:  # noqa: BLE001 - the run's data may have moved; the caller can pass one
        tok = None
    return Pretrained(cfg.model, state, tok, kind, checkpoint, data=dataclasses.asdict(cfg.data))


def _from_hf(path: str) -> Pretrained:
    from flexbert.convert.hf import ConversionError, read_hf_folder

    try:
        cfg, tensors, label_names = read_hf_folder(path)
    except (ConversionError, OSError) as e:
        raise ModelLoadError(f"--model {path}: {e}") from None
    tok = path if os.path.exists(os.path.join(path, "tokenizer.json")) else None
    return Pretrained(cfg, tensors, tok, "hf", path, label_names)


def load_pretrained(path: str) -> Pretrained:
    if not os.path.exists(path):
        raise ModelLoadError(f"--model {path}: does not exist")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "config.json")):
            return _from_hf(path)
        if os.path.exists(os.path.join(path, "config.yaml")):
            return _from_run(path, None, "run")
        raise ModelLoadError(f"--model {path}: neither a run folder (config.yaml) nor a Hugging Face folder (config.json)")
    return _from_run(path, path, "checkpoint")


def _load(model: torch.nn.Module, state: dict, what: str, allow_missing: tuple[str, ...] = ()) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(allow_missing)]
    if missing or unexpected:
        raise ModelLoadError(f"{what}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


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
