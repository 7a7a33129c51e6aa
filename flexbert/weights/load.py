"""What ``--model M`` means: the one loader of a model for evaluation, fine-tuning and weight tools.

M is one of:

* a train.py run folder (``config.yaml`` + ``checkpoints/``): its newest intact checkpoint;
* a Composer checkpoint file (``RUN/checkpoints/baN.pt``, or anywhere: it carries its config);
* a Hugging Face ModernBERT folder (``config.json`` + safetensors), as ``flexbert export`` writes it
  or as ModernBERT is released; a ``ModernBertForSequenceClassification`` folder too; for the
  ``encoder`` head any sentence-transformers folder.

``load_model(M, head=...)`` returns a ``LoadedModel``: the config, the weights (FlexBERT names),
the tokenizer folder and fingerprint it was trained with, and ``model``, built for ``head``:

=============  ==========================================================================
``none``       no module (the weights and their facts only: merging, tiling)
``mlm``        ``FlexBertForMaskedLM`` in eval mode
``classifier`` ``FlexBertForSequenceClassification`` (``num_labels``; config overrides)
``encoder``    a ``SentenceTransformer`` (run folders and checkpoints are exported first, mean pooling)
``sparse``     a sentence-transformers ``SparseEncoder``: SPLADE over the MLM head (``MLMTransformer``
               then ``SpladePooling``, max over log(1 + relu(logits))), or a saved SparseEncoder folder
=============  ==========================================================================

Run folders and checkpoints are read through the run folder (flexbert/train/run_folder.py: the
config a checkpoint was trained with, its weights after the integrity check), Hugging Face folders
through the converter (every safetensors file checked against its recorded checksum, on every head).
Reading the reference (``load_pretrained``, ``LoadedModel``, the MLM head) sits one layer down, in
flexbert/train/pretrained.py, so that training can load a distillation teacher the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Callable, Optional

from flexbert.convert.hf import ConversionError, check_weights
from flexbert.model.model import FlexBertForSequenceClassification
from flexbert.registry import Registry
from flexbert.train.pretrained import LoadedModel, ModelLoadError, load_pretrained, load_state, mlm_model
from flexbert.weights.export import export_to_hf

__all__ = ["LoadedModel", "ModelLoadError", "classifier_model", "encoder_model", "load_model", "load_pretrained", "load_source",
           "mlm_model"]


def classifier_model(pre: LoadedModel, num_labels: int, **overrides) -> FlexBertForSequenceClassification:
    """A FlexBertForSequenceClassification: encoder (and head, as transformers loads it) from the
    pretrained weights, a fresh classifier unless the source is a classifier with ``num_labels``."""
    cfg = dataclasses.replace(pre.config, num_labels=num_labels, **overrides)
    model = FlexBertForSequenceClassification(cfg)
    keep = {k: v for k, v in pre.state.items() if k.startswith(("model.", "head."))}
    src_cls = {k: v for k, v in pre.state.items() if k.startswith("classifier.")}
    if src_cls and src_cls["classifier.weight"].shape[0] == num_labels:
        keep.update(src_cls)
    load_state(model, keep, pre.path, ("classifier.",))
    return model


def _hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def _as_model_folder(path: str, build: Callable[[str], Any]) -> Any:
    """``build(folder)`` on a Hugging Face / sentence-transformers folder (its safetensors checked
    first), or on a run folder or checkpoint exported first to a scratch folder by the one export path."""
    if _hf_folder(path):
        try:
            check_weights(path)
        except ConversionError as e:
            raise ModelLoadError(f"--model {path}: {e}") from None
        try:
            return build(path)
        except Exception as e:  # noqa: BLE001 - a folder of another architecture: its files, sentence-transformers' checks
            raise ModelLoadError(f"--model {path}: sentence-transformers cannot load it ({type(e).__name__}: "
                                 f"{(str(e).strip().splitlines() or [''])[0]})") from e
    with tempfile.TemporaryDirectory() as scratch:
        folder = os.path.join(scratch, "hf")
        export_to_hf(folder, run_dir=path if os.path.isdir(path) else None, checkpoint=None if os.path.isdir(path) else path)
        return build(folder)


def encoder_model(path: str, max_seq_len: Optional[int] = None, device: Optional[str] = None):
    """A SentenceTransformer from a Hugging Face / sentence-transformers folder (a FlexBERT export
    carries its pooling files), or from a run folder or checkpoint (mean pooling)."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - optional: the 'retrieval' extra

    model = _as_model_folder(path, lambda folder: SentenceTransformer(folder, device=device))
    if max_seq_len:
        model.max_seq_length = max_seq_len
    return model


def is_sparse_encoder(path: Optional[str]) -> bool:
    """A folder that sentence-transformers saved as a SparseEncoder (its config_sentence_transformers.json says so)."""
    try:
        with open(os.path.join(str(path), "config_sentence_transformers.json")) as f:
            return json.load(f).get("model_type") == "SparseEncoder"
    except (OSError, ValueError, AttributeError):
        return False


def sparse_model(path: str, max_seq_len: Optional[int] = None, device: Optional[str] = None):
    """A SparseEncoder: a saved one as it is, else SPLADE built on the model's masked-LM head (a
    FlexBERT export or ModernBERT folder, or a run folder or checkpoint exported first)."""
    from sentence_transformers.sparse_encoder import SparseEncoder  # noqa: PLC0415 - optional: the 'retrieval' extra
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling  # noqa: PLC0415 - same

    if is_sparse_encoder(path):
        model = SparseEncoder(path, device=device)
    else:
        model = _as_model_folder(path, lambda folder: SparseEncoder(
            modules=[MLMTransformer(folder), SpladePooling(pooling_strategy="max")], device=device))
    if max_seq_len:
        model.max_seq_length = max_seq_len
    return model


HEADS: Registry[Callable[..., Any]] = Registry("head")
HEADS.register("none")(lambda pre, **_: None)
HEADS.register("mlm")(lambda pre, **_: mlm_model(pre))
HEADS.register("classifier")(lambda pre, num_labels, **overrides: classifier_model(pre, num_labels, **overrides))


def load_model(ref: str, head: str = "mlm", **options) -> LoadedModel:
    """The model behind ``ref`` (run folder, checkpoint or Hugging Face folder) with ``head`` built
    as ``.model`` (see the module docstring); ``options`` go to the head (``num_labels``, config
    overrides; ``max_seq_len``, ``device`` for ``encoder``)."""
    if head in ("encoder", "sparse"):
        if not os.path.exists(ref):
            raise ModelLoadError(f"--model {ref}: does not exist (give a run folder, a checkpoint or a model folder)")
        facts = _encoder_facts(ref)
        build = encoder_model if head == "encoder" else sparse_model
        facts.model = build(ref, options.get("max_seq_len"), options.get("device"))
        return facts
    build = HEADS.get(head, "head")
    loaded = load_pretrained(ref)
    loaded.model = build(loaded, **options)
    return loaded


def load_source(src: str, writer, error: type[Exception]) -> LoadedModel:
    """The MLM model a weight tool reads from ``--from src`` (tiling, pruning): a load failure is
    re-raised as ``error`` naming ``--from``, and the source's files join ``writer.inputs`` so the
    output folder can never be one of them.  ``.model`` is the FlexBERT MLM model."""
    try:
        source = load_pretrained(src)
        source.model = mlm_model(source)
    except ModelLoadError as e:
        raise error(str(e).replace("--model ", "--from ", 1)) from None
    writer.inputs = [*writer.inputs, source.path]
    return source


def _encoder_facts(ref: str) -> LoadedModel:
    """The facts of an encoder's source: a FlexBERT/ModernBERT one's as ``load_pretrained`` reads
    them; a sentence-transformers folder of another architecture has only its path."""
    try:
        return load_pretrained(ref)
    except ModelLoadError:
        if os.path.isdir(ref) and os.path.exists(os.path.join(ref, "modules.json")):
            tok = ref if os.path.exists(os.path.join(ref, "tokenizer.json")) else None
            return LoadedModel(None, {}, tok, "sentence-transformers", ref, given=ref)
        raise
