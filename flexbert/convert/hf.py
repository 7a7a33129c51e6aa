"""Conversion to and from transformers' ModernBERT (``ModernBertForMaskedLM``), safetensors only.

FlexBERT's module names are ModernBERT's, so the weights convert by name; what needs care is the
config.  The whole mapping lives here:

* ``config_from_hf(hf_config) -> FlexBertConfig`` and ``config_to_hf(cfg) -> ModernBertConfig``
  (in ``hf_config.py``); options ModernBertConfig cannot express raise ``ConversionError``.
* ``hf_state_dict(flex_state_dict, cfg)``: the tensors to write, checked key by key and shape by
  shape against a ModernBertForMaskedLM built on the meta device.
* ``from_hf(model_or_dir)`` and ``to_hf(model, out_dir, tokenizer=None)``.

Dropout rates are training-time settings.  ModernBERT has one ``attention_dropout`` for both the
attention probabilities and the attention output; FlexBERT has two.  When they differ (the
ModernBERT recipe: 0.0 and 0.1) the export writes 0.0, as the released ModernBERT checkpoints do;
inference is unaffected.  Likewise ``sparse_prediction`` (a training-speed option) is exported as
False, the transformers default.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoConfig, ModernBertForMaskedLM, ModernBertForSequenceClassification, PreTrainedTokenizerFast

from flexbert.convert.hf_config import ConversionError, config_from_hf, config_to_hf  # noqa: F401 (public here too)
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.config import FlexBertConfig

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TIED_KEY = "decoder.weight"
EMBEDDING_KEY = "model.embeddings.tok_embeddings.weight"
DIGEST_KEY = "flexbert_sha256"  # in the safetensors header of every FlexBERT export


# ---------------------------------------------------------------------------- weights
def _expected_hf_shapes(hf_config) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a ModernBertForMaskedLM's state dict, built on the meta device (no memory)."""
    with torch.device("meta"):
        hf = ModernBertForMaskedLM(hf_config)
    return {k: tuple(v.shape) for k, v in hf.state_dict().items()}


def _check_keys(got: Mapping[str, torch.Tensor], expected: Mapping[str, tuple], what: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{what}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    for k, shape in expected.items():
        if tuple(got[k].shape) != shape:
            raise ConversionError(f"{what}: {k} has shape {tuple(got[k].shape)}, expected {shape}")


def hf_state_dict(state_dict: Mapping[str, torch.Tensor], cfg: FlexBertConfig) -> dict[str, torch.Tensor]:
    """The tensors to save for transformers, checked against ModernBertForMaskedLM's own keys.

    FlexBERT and ModernBERT share names, so this is a check, not a rename.  A tied decoder
    weight is left out (safetensors refuses shared tensors; transformers re-ties on load).
    """
    hf_config = config_to_hf(cfg)
    out = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    expected = _expected_hf_shapes(hf_config)
    _check_keys(out, expected, "FlexBERT state dict vs ModernBertForMaskedLM")
    if cfg.tie_word_embeddings:
        out.pop(TIED_KEY)
    else:
        out[TIED_KEY] = out[TIED_KEY].clone()
    return out


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (key order): what an export records in
    its safetensors header and every load checks."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """One safetensors file; a truncated one, or one whose tensors no longer match the checksum its
    FlexBERT export recorded, raises ConversionError naming the file."""
    try:
        tensors = load_file(str(file))
        with safe_open(str(file), "pt") as f:
            recorded = (f.metadata() or {}).get(DIGEST_KEY)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; one line each
        raise ConversionError(f"{file}: not a complete safetensors file ({type(e).__name__}: {str(e).splitlines()[0]}); "
                              "copy or export it again") from None
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise ConversionError(f"{file}: corrupt (its tensors do not match the checksum written with them); copy or export it again")
    return tensors


def _load_safetensors_dir(path: Path) -> dict[str, torch.Tensor]:
    if (path / SAFETENSORS_NAME).exists():
        return load_safetensors(path / SAFETENSORS_NAME)
    if (path / SAFETENSORS_INDEX).exists():
        index = json.loads((path / SAFETENSORS_INDEX).read_text())
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_safetensors(path / shard))
        return tensors
    raise ConversionError(f"{path}: no {SAFETENSORS_NAME} (FlexBERT reads safetensors only)")


def check_weights(path: Union[str, os.PathLike]) -> None:
    """Every safetensors file of a model folder is complete and matches the checksum recorded with
    it (ConversionError naming the file otherwise); a folder without safetensors passes."""
    path = Path(path)
    if (path / SAFETENSORS_NAME).exists() or (path / SAFETENSORS_INDEX).exists():
        _load_safetensors_dir(path)


# ---------------------------------------------------------------------------- public API
def from_hf(model_or_dir: Union[str, os.PathLike, Any]):
    """A FlexBertForMaskedLM with the weights of a transformers ModernBertForMaskedLM.

    ``model_or_dir`` is a loaded ``ModernBertForMaskedLM`` or a local folder with ``config.json``
    and ``model.safetensors`` (as ``save_pretrained`` or ``to_hf`` write it).
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        path = Path(model_or_dir)
        hf_config = AutoConfig.from_pretrained(str(path))
        tensors = _load_safetensors_dir(path)
    else:
        hf_config = model_or_dir.config
        tensors = dict(model_or_dir.state_dict())
    if getattr(hf_config, "model_type", None) != "modernbert":
        raise ConversionError(f"from_hf: expected a ModernBERT model, got model_type={getattr(hf_config, 'model_type', None)!r}")
    cfg = config_from_hf(hf_config)
    if cfg.tie_word_embeddings and TIED_KEY not in tensors and EMBEDDING_KEY in tensors:
        tensors[TIED_KEY] = tensors[EMBEDDING_KEY]
    model = FlexBertForMaskedLM(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_keys(tensors, expected, "ModernBERT checkpoint vs FlexBertForMaskedLM")
    model.load_state_dict(tensors, strict=True)
    model.tie_weights()
    return model


def to_hf(model, out_dir: Union[str, os.PathLike], tokenizer: Any = None, config: Optional[FlexBertConfig] = None) -> Path:
    """Write ``out_dir/config.json`` (ModernBertConfig) and ``out_dir/model.safetensors``.

    ``model`` is a FlexBertForMaskedLM, or its state dict together with ``config`` (keys as
    FlexBertForMaskedLM names them: strip a wrapper's prefix, e.g. Composer's ``model.``, first).  The folder
    loads with ``AutoModelForMaskedLM.from_pretrained(out_dir)``.  ``tokenizer`` (optional) is a
    transformers tokenizer, a ``tokenizers.Tokenizer``, or a path to a ``tokenizer.json``.
    """
    if isinstance(model, Mapping):
        if config is None:
            raise ConversionError("to_hf: pass config= when giving a state dict")
        cfg, state_dict = config, model
    else:
        cfg, state_dict = model.config, model.state_dict()
    tensors = hf_state_dict(state_dict, cfg)  # validates the config first
    hf_config = config_to_hf(cfg)
    return _write_folder(out_dir, tensors, hf_config, tokenizer, cfg)


def _write_folder(out_dir, tensors: dict, hf_config, tokenizer: Any, cfg: FlexBertConfig) -> Path:
    """config.json + model.safetensors (+ the tokenizer): the folder layout both exports share."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / SAFETENSORS_NAME), metadata={"format": "pt", DIGEST_KEY: tensors_digest(tensors)})
    hf_config.save_pretrained(str(out))
    if tokenizer is not None:
        _save_tokenizer(tokenizer, out, cfg)
    return out


def _save_tokenizer(tokenizer: Any, out: Path, cfg: FlexBertConfig) -> None:
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(out))
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.from_file(str(tokenizer))
    name = tokenizer.id_to_token
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        cls_token=name(cfg.cls_token_id),
        sep_token=name(cfg.sep_token_id),
        pad_token=name(cfg.pad_token_id),
        mask_token=name(cfg.mask_token_id),
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(str(out))


# ---------------------------------------------------------------------------- classification
CLASSIFIER_ARCH = "ModernBertForSequenceClassification"


def read_hf_folder(path: Union[str, os.PathLike]) -> tuple[FlexBertConfig, dict[str, torch.Tensor], Optional[list[str]]]:
    """(config, tensors with FlexBERT names, label names or None) of a ModernBERT folder: a masked-LM
    folder (released or exported) or a ``ModernBertForSequenceClassification`` one."""
    path = Path(path)
    hf_config = AutoConfig.from_pretrained(str(path))
    if getattr(hf_config, "model_type", None) != "modernbert":
        raise ConversionError(f"{path}: expected a ModernBERT model, got model_type={getattr(hf_config, 'model_type', None)!r}")
    cfg = config_from_hf(hf_config)
    tensors = _load_safetensors_dir(path)
    labels = None
    if CLASSIFIER_ARCH in (getattr(hf_config, "architectures", None) or []):
        id2label = {int(k): v for k, v in (hf_config.id2label or {}).items()}
        labels = [id2label[i] for i in sorted(id2label)]
    return cfg, tensors, labels


def config_to_hf_classifier(cfg: FlexBertConfig, label_names: Optional[list[str]] = None):
    """ModernBertConfig of a sequence classifier: ``num_labels == 1`` is regression; class names
    (``label_names``) become id2label / label2id."""
    hf_config = config_to_hf(cfg)
    hf_config.architectures = [CLASSIFIER_ARCH]
    if cfg.num_labels == 1:
        hf_config.problem_type = "regression"
        names = label_names or ["score"]
    else:
        hf_config.problem_type = "single_label_classification"
        names = label_names or [f"LABEL_{i}" for i in range(cfg.num_labels)]
    if len(names) != cfg.num_labels:
        raise ConversionError(f"label names: {len(names)} given for num_labels={cfg.num_labels}")
    hf_config.id2label = {i: str(n) for i, n in enumerate(names)}
    hf_config.label2id = {str(n): i for i, n in enumerate(names)}
    return hf_config


def to_hf_classifier(model, out_dir: Union[str, os.PathLike], label_names: Optional[list[str]] = None,
                     tokenizer: Any = None) -> Path:
    """Write a FlexBertForSequenceClassification as a folder that
    ``AutoModelForSequenceClassification.from_pretrained`` loads (same names: checked, not renamed)."""
    cfg = model.config
    hf_config = config_to_hf_classifier(cfg, label_names)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ModernBertForSequenceClassification(hf_config).state_dict().items()}
    _check_keys(tensors, expected, "FlexBERT classifier vs ModernBertForSequenceClassification")
    return _write_folder(out_dir, tensors, hf_config, tokenizer, cfg)
