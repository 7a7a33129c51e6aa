"""Needle in a haystack for an encoder: can the MLM head fill in a value it read far away?

Each input is ``[CLS] filler... NEEDLE ...filler QUESTION [SEP]``, exactly ``length`` tokens:

* the needle, ``The secret number of KEY is VALUE.``, sits at ``depth`` of the filler (0: right
  after ``[CLS]``, 1: right before the question), so the value is ``(1 - depth) * filler`` tokens
  (plus the needle) away from the question;
* the question repeats the needle with the value's tokens masked: ``The secret number of KEY is
  [MASK] [MASK].``, and the score is the MLM head's top-1 prediction at each masked token
  (``accuracy``: share of value tokens right; ``exact``: share of needles with every token right).

The key is drawn from ``KEYS``, the value from ``values`` (default: a number 100-999), the filler
is real text (``filler``: any corpus file the readers know, one document per line/record; default
Python's own documentation, ``pydoc_data``, which ships with Python) cut at a random place.  Each
cell of the length x depth table has ``samples`` needles, drawn from a generator seeded by
``(seed, length, depth)``, so a cell is the same for every model with the same tokenizer.  The
value cannot be guessed from the filler, so a model that cannot see the needle scores about
chance (1 / number of values per token) and one that reads the whole input can copy it.

Needles are scored in packed rows (``batch_tokens`` per forward) through the model's one
per-token loss primitive (``FlexBertForMaskedLM.token_losses``: top-1 hits at the labelled
positions), on any model ``--model`` names (flexbert/weights/load.py).  The result is a ``Result``
(task ``niah``): ``accuracy`` / ``exact`` overall and ``accuracy@LENGTH`` per length under the
``test`` split, the table under ``details["table"]``; the heatmap PNG is drawn by the caller
(flexbert/experiments/plots.py ``niah_heatmap``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from pydoc_data.topics import topics as python_docs

from flexbert.config import IGNORE_INDEX, ConfigError
from flexbert.data.fingerprint import tokenizer_fingerprint
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.sources import iter_documents
from flexbert.data.tokenizer import SpecialTokens, load_tokenizer
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.weights.load import ModelLoadError, load_model

DEFAULT_LENGTHS = (128, 256, 512, 1024)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
KEYS = ("amber", "birch", "cobalt", "dune", "ember", "fern", "garnet", "harbor", "iris", "jade", "kelp", "lark",
        "maple", "nova", "opal", "pine")
NEEDLE = " The secret number of {key} is"  # then " VALUE" and "."
SPLIT = "test"


@dataclass
class Needle:
    ids: list[int]  # the whole input, [CLS] .. [SEP]
    at: int  # first masked position (in the question)
    value: list[int]  # the value's token ids (the labels of at, at + 1, ...)
    distance: int  # tokens from the needle's value to the question's masked value
    needle_at: int  # where the needle starts


# --------------------------------------------------------------------------- the haystacks
def filler_ids(tok, path: Optional[str], need: int) -> np.ndarray:
    """At least ``need`` token ids of filler text (``path``'s documents, else Python's docs), in order."""
    texts = (d.text for d in iter_documents(path)) if path else (python_docs[k] for k in sorted(python_docs))
    ids: list[int] = []
    for text in texts:
        if text.strip():
            ids += tok.encode(" ".join(text.split()) + " ", add_special_tokens=False).ids
        if len(ids) >= need:
            break
    if not ids:
        raise ConfigError(f"filler: {path} holds no text")
    return np.resize(np.asarray(ids, dtype=np.int64), max(need, len(ids)))  # repeated when short


def make_needle(rng: np.random.Generator, tok, special: SpecialTokens, filler: np.ndarray, values: list[str],
                length: int, depth: float) -> Needle:
    """One input of ``length`` tokens with the needle at ``depth`` of the filler (module docstring)."""
    key, value = KEYS[rng.integers(len(KEYS))], values[rng.integers(len(values))]
    head = tok.encode(NEEDLE.format(key=key), add_special_tokens=False).ids
    val = tok.encode(" " + value, add_special_tokens=False).ids
    dot = tok.encode(".", add_special_tokens=False).ids
    needle, question = head + val + dot, head + [special.mask_id] * len(val) + dot
    n = length - 2 - len(needle) - len(question)
    if n < 0:
        raise ConfigError(f"lengths: {length} tokens cannot hold the needle and the question "
                          f"({len(needle) + len(question) + 2} tokens); use longer lengths")
    start = int(rng.integers(0, len(filler) - n + 1))
    fill = filler[start:start + n].tolist()
    p = int(round(depth * n))
    ids = [special.cls_id] + fill[:p] + needle + fill[p:] + question + [special.sep_id]
    at = 1 + n + len(needle) + len(head)
    return Needle(ids, at, val, at - (1 + p + len(head)), 1 + p)


def cell_needles(cfg: "NiahConfig", tok, special: SpecialTokens, filler: np.ndarray, length: int,
                 depth: float) -> list[Needle]:
    rng = np.random.default_rng([cfg.seed, length, int(round(depth * 1000))])
    values = cfg.values or [str(v) for v in range(100, 1000)]
    return [make_needle(rng, tok, special, filler, values, length, depth) for _ in range(cfg.samples)]


# --------------------------------------------------------------------------- the scoring
def _rows(needles: list[Needle], batch_tokens: int) -> list[list[Needle]]:
    rows, row, size = [], [], 0
    for n in needles:
        if row and size + len(n.ids) > batch_tokens:
            rows.append(row)
            row, size = [], 0
        row.append(n)
        size += len(n.ids)
    return rows + ([row] if row else [])


def packed_row(needles: list[Needle], device="cpu") -> dict:
    """One packed row of ``needles`` (a segment each): ``input_ids``, ``labels`` (the value's ids at
    the masked positions, IGNORE_INDEX elsewhere), ``cu_seqlens``, ``max_seqlen``."""
    ids = torch.tensor([i for n in needles for i in n.ids], dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    cu = [0]
    for n in needles:
        labels[cu[-1] + n.at: cu[-1] + n.at + len(n.value)] = torch.tensor(n.value)
        cu.append(cu[-1] + len(n.ids))
    return {"input_ids": ids.to(device), "labels": labels.to(device),
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32, device=device),
            "max_seqlen": max(len(n.ids) for n in needles)}


@torch.no_grad()
def score_needles(model, needles: list[Needle], batch_tokens: int = 8192, device="cpu") -> list[list[bool]]:
    """Per needle, whether the model's top-1 prediction is right at each masked value token; the
    needles go in packed rows (one segment each) through ``model.token_losses``."""
    out: list[list[bool]] = []
    for row in _rows(needles, batch_tokens):
        _, hit, _ = model.token_losses(**packed_row(row, device))
        hits = hit.bool().tolist()
        for n in row:
            out.append(hits[:len(n.value)])
            hits = hits[len(n.value):]
    return out


def cell_row(length: int, depth: float, needles: list[Needle], hits: list[list[bool]]) -> dict:
    tokens = sum(len(h) for h in hits)
    return {"length": length, "depth": depth, "needles": len(needles), "value_tokens": tokens,
            "accuracy": sum(map(sum, hits)) / max(1, tokens), "exact": sum(all(h) for h in hits) / max(1, len(hits)),
            "distance": sum(n.distance for n in needles) / max(1, len(needles))}


def token_accuracy(rows: list[dict]) -> float:
    """The share of value tokens right over the cells ``rows``."""
    return sum(r["accuracy"] * r["value_tokens"] for r in rows) / max(1, sum(r["value_tokens"] for r in rows))


def format_table(rows: list[dict]) -> str:
    """The length x depth accuracy table as text."""
    depths = sorted({r["depth"] for r in rows})
    lines = ["  length \\ depth " + "".join(f"{d:>8.2f}" for d in depths)]
    for length in sorted({r["length"] for r in rows}):
        cells = {r["depth"]: r["accuracy"] for r in rows if r["length"] == length}
        lines.append(f"  {length:>14,} " + "".join(f"{cells[d]:>8.3f}" for d in depths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the evaluation
@dataclass
class NiahConfig:
    model: str = ""  # run folder, checkpoint or Hugging Face folder (its MLM head)
    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))  # input lengths in tokens
    depths: list[float] = field(default_factory=lambda: list(DEFAULT_DEPTHS))  # needle depth in the filler, 0..1
    samples: int = 10  # needles per (length, depth) cell
    filler: Optional[str] = None  # a corpus file (default: Python's documentation)
    values: Optional[list[str]] = None  # what a value may be (default: the numbers 100-999)
    tokenizer: Optional[str] = None  # default: the model's
    seed: int = 0
    batch_tokens: int = 8192  # tokens per forward (packed rows)
    device: str = "cpu"
    out: Optional[str] = None  # write OUT/result.json
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        if not self.model:
            raise ConfigError("model: required")
        if not self.lengths or any(n < 8 for n in self.lengths):
            raise ConfigError(f"lengths: token counts >= 8, got {self.lengths}")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(f"depths: fractions in [0, 1], got {self.depths}")
        if self.samples < 1 or self.batch_tokens < 1:
            raise ConfigError("samples and batch_tokens must be >= 1")
        if self.values is not None and (not self.values or not all(v.strip() for v in self.values)):
            raise ConfigError("values: non-empty strings")


def _tokenizer(cfg: NiahConfig, loaded):
    """The model's tokenizer, or ``--tokenizer`` once checked against the model (one line if not its)."""
    path = cfg.tokenizer or loaded.tokenizer_dir
    if not path:
        raise ModelLoadError(f"--model {cfg.model}: its tokenizer is not known; give --tokenizer")
    tok = load_tokenizer(path)
    if cfg.tokenizer:
        loaded.check_tokenizer(tokenizer_fingerprint(path), f"--tokenizer {path}",
                               SpecialTokens.from_tokenizer(tok).vocab_size)
    return tok


@evaluation("niah", NiahConfig)
def evaluate_niah(cfg: NiahConfig) -> Result:
    """The length x depth table of ``cfg.model``'s accuracy at filling in the needle's value."""
    if cfg.out:
        check_output_dir(cfg.out, [cfg.model, cfg.filler])
    if cfg.filler and not os.path.exists(cfg.filler):
        raise ConfigError(f"filler: {cfg.filler} does not exist")
    loaded = load_model(cfg.model, "mlm")
    tok = _tokenizer(cfg, loaded)
    special = SpecialTokens.from_tokenizer(tok)
    filler = filler_ids(tok, cfg.filler, 4 * max(cfg.lengths))
    model = loaded.model.to(cfg.device).eval()
    rows = []
    for length in sorted(set(cfg.lengths)):
        for depth in sorted(set(cfg.depths)):
            needles = cell_needles(cfg, tok, special, filler, length, depth)
            rows.append(cell_row(length, depth, needles, score_needles(model, needles, cfg.batch_tokens, cfg.device)))
    metrics = {"accuracy": token_accuracy(rows),
               "exact": sum(r["exact"] * r["needles"] for r in rows) / sum(r["needles"] for r in rows)}
    for length in sorted(set(cfg.lengths)):
        metrics[f"accuracy@{length}"] = token_accuracy([r for r in rows if r["length"] == length])
    if cfg.out:
        prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.filler])
    details = {"table": rows, "lengths": sorted(set(cfg.lengths)), "depths": sorted(set(cfg.depths))}
    return Result("niah", loaded.ref(), settings_of(cfg), {SPLIT: metrics}, details)
