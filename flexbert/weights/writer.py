"""Checkpoint in, model folder out: the one writer of model folders.

Export, averaging, merging, tiling, pruning and fine-tuning write their output through a
``ModelWriter``, in this order:

1. ``ModelWriter(tool, out, overwrite=..., inputs=[...], keep=[...])`` checks the output folder
   before any heavy work: not a file, not an input nor a folder holding one, not a run folder it
   may only lie inside (flexbert/data/outputs.py);
2. ``writer.tokenizer(tok_dir, fingerprint, source, vocab_size)``: the tokenizer written with the
   model must be the one the model was trained with (when the source records it) and fit its
   embeddings - the one tokenizer check of every tool;
3. ``writer.write_mlm(model)`` / ``write_classifier(model, label_names)``: the output folder is
   created empty (a non-empty one only with ``overwrite``, replaced whole), then a Hugging Face
   ModernBERT folder is written, or FlexBERT-named ``model.safetensors`` when transformers cannot
   express the model; ``write_checkpoint(ckpt, cfg)`` writes a run folder (a checkpoint and its
   config.yaml) instead;
4. ``writer.record(sources, settings)``: ``OUT/flexbert_record.json``, one schema for every tool:
   ``{"tool", "format", "sources", "tokenizer", "tokenizer_fingerprint", "settings", "written"}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from flexbert.convert.hf import DIGEST_KEY, ConversionError, tensors_digest, to_hf, to_hf_classifier
from flexbert.data.fingerprint import check_same, tokenizer_fingerprint
from flexbert.data.outputs import check_output_dir, prepare_output_dir, write_json
from flexbert.errors import FlexBertError
from flexbert.train.run_folder import RunFolder

RECORD = "flexbert_record.json"
FORMATS = ("hf", "flexbert-safetensors", "run-folder")


class WriteError(FlexBertError, ValueError):
    """A model folder that cannot be written as asked (one line naming the input and why)."""


def read_record(folder: str) -> Optional[dict]:
    """The record a FlexBERT tool wrote with ``folder`` (None for folders written elsewhere)."""
    path = os.path.join(folder, RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def nonfinite(state: dict) -> Optional[str]:
    """None when every floating-point tensor of ``state`` is finite; else the first bad one, in
    words ("model.layers.0.mlp.Wo.weight: 12 nan, 0 inf of 4096")."""
    for k, v in state.items():
        if torch.is_tensor(v) and torch.is_floating_point(v) and not bool(torch.isfinite(v).all()):
            nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
            return f"{k}: {nan} nan, {inf} inf of {v.numel()}"
    return None


def check_tokenizer(tok, tok_dir: Optional[str], fingerprint: Optional[str], source: str, vocab_size: int) -> None:
    """``tok`` must be the tokenizer ``source`` was trained with (``fingerprint``, when known) and
    hold no more ids than its ``vocab_size`` embeddings; one line naming both sides otherwise."""
    check_same(fingerprint, source, tokenizer_fingerprint(tok), f"tokenizer {tok_dir}")
    if len(tok) > vocab_size:
        raise WriteError(f"tokenizer {tok_dir} has {len(tok)} tokens, more than {source}'s vocabulary "
                         f"(vocab_size={vocab_size}): ids past it have no embedding")


@dataclass
class ModelWriter:
    tool: str  # export | average | merge | tile | prune | finetune
    out: str
    overwrite: bool = False
    inputs: Sequence[Optional[str]] = ()  # the output may not be, hold or lie inside one of these
    keep: Sequence[Optional[str]] = ()  # run folders the output may lie inside but not be or hold
    tokenizer_dir: Optional[str] = None
    tokenizer_fingerprint: Optional[str] = None
    format: Optional[str] = None
    _tok: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.check()  # refused before any heavy work

    def check(self) -> None:
        """The output-folder checks that need nothing written (again after ``inputs``/``keep`` grew)."""
        check_output_dir(self.out, self.inputs, keep=self.keep)

    # -- the tokenizer written with the model
    def tokenizer(self, tok_dir: Optional[str], fingerprint: Optional[str], source: str, vocab_size: int):
        """Load ``tok_dir`` (None: the model is written without one) after the tokenizer check."""
        if not tok_dir:
            return None
        tok = AutoTokenizer.from_pretrained(tok_dir)
        check_tokenizer(tok, tok_dir, fingerprint, source, vocab_size)
        self.tokenizer_dir, self.tokenizer_fingerprint, self._tok = tok_dir, tokenizer_fingerprint(tok), tok
        self.inputs = [*self.inputs, tok_dir]
        return tok

    # -- the folder
    def check_finite(self, state: dict, source: str = "the model") -> None:
        """Refuse to write weights that are not all finite (a diverged run, an overflowing merge)."""
        bad = nonfinite(state)
        if bad:
            raise WriteError(f"{self.tool}: {source} has weights that are not finite ({bad}); nothing was "
                             f"written to {self.out} (a diverged run: use an earlier checkpoint)")

    def _open(self) -> None:
        prepare_output_dir(self.out, overwrite=self.overwrite, inputs=self.inputs, keep=self.keep)

    def write_mlm(self, model: torch.nn.Module, fallback: bool = True) -> str:
        """A Hugging Face ModernBERT folder of a FlexBertForMaskedLM; FlexBERT-named safetensors
        when transformers cannot express it (``fallback``; else the ConversionError).  Returns what
        ``init_from`` takes."""
        self.check_finite(model.state_dict())
        self._open()
        try:
            to_hf(model.eval(), self.out, tokenizer=self._tok)
        except ConversionError:
            if not fallback:
                raise
            return self._flexbert_safetensors(model, model.config.tie_word_embeddings)
        self.format = "hf"
        return self.out

    def write_classifier(self, model: torch.nn.Module, label_names: Optional[list[str]]) -> str:
        """A ModernBertForSequenceClassification folder (label names kept), else FlexBERT safetensors."""
        self.check_finite(model.state_dict())
        self._open()
        tok = self._tok if self._tok is not None else (
            os.path.join(self.tokenizer_dir, "tokenizer.json") if self.tokenizer_dir else None)
        try:
            to_hf_classifier(model, self.out, label_names, tokenizer=tok)
            self.format = "hf"
            return self.out
        except ConversionError:
            return self._flexbert_safetensors(model, False)

    def _flexbert_safetensors(self, model: torch.nn.Module, tied: bool) -> str:
        sd = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "decoder.weight")}
        path = os.path.join(self.out, "model.safetensors")
        save_file(sd, path, metadata={"format": "pt", DIGEST_KEY: tensors_digest(sd)})
        self.format = "flexbert-safetensors"
        return path

    def write_checkpoint(self, ckpt: dict, cfg, batch: int) -> str:
        """A run folder: ``checkpoints/ba{batch}.pt`` (written atomically) and the config.yaml it
        was trained with (run_dir pointing here).  Returns the checkpoint path."""
        self.check_finite(ckpt["state"]["model"], "the checkpoint")
        self._open()
        folder = os.path.join(self.out, "checkpoints")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"ba{batch}.pt")
        torch.save(ckpt, path + ".tmp")
        os.replace(path + ".tmp", path)
        RunFolder(self.out).write_config(dataclasses.replace(cfg, run_dir=os.path.abspath(self.out), save_folder=None))
        self.format = "run-folder"
        return path

    # -- the record
    def record(self, sources: Sequence[str], settings: Optional[dict] = None) -> dict:
        """Write ``OUT/flexbert_record.json`` (after the model) and return it."""
        if self.format is None:
            raise RuntimeError("ModelWriter.record before a write_* call")
        rec = {"tool": self.tool, "format": self.format, "sources": [os.path.abspath(s) for s in sources if s],
               "tokenizer": self.tokenizer_dir, "tokenizer_fingerprint": self.tokenizer_fingerprint,
               "settings": dict(settings or {}), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(os.path.join(self.out, RECORD), rec)
        return rec
