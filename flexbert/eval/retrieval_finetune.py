"""Retrieval fine-tuning: (query, positive[, negative]) rows, in-batch negatives.

Driven by sentence-transformers' own ``SentenceTransformerTrainer`` (the maintained recipe: a
no-duplicates batch sampler so no batch holds a passage twice, linear decay after warmup, a progress
bar, per-step loss records) with ``MultipleNegativesRankingLoss``: every query against every passage
of its batch (and the hard negatives, when the file has a negative column), cross-entropy towards
its own.  ``mini_batch_size`` switches to ``CachedMultipleNegativesRankingLoss`` (GradCache), which
gives a large batch of negatives at the memory of a small one.  The trainer needs ``datasets`` and
``accelerate`` (pinned with the 'retrieval' extra to releases that accept transformers 4.53's
huggingface_hub).  The model is anything ``--model`` takes (flexbert/weights/load.py, ``encoder``
head: a run folder or checkpoint is exported first); the output is a SentenceTransformer folder,
for ``flexbert eval-retrieval``, with the ``retrieval-finetune`` evaluation's result.json.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from transformers import set_seed
from transformers.trainer_callback import PrinterCallback, TrainerCallback

from flexbert.config import ConfigError
from flexbert.data.beir import Beir, load_beir
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.readers import InputError, read_records
from flexbert.errors import FlexBertError
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.eval.retrieval import rank_dense, ranking_metrics
from flexbert.weights.load import load_model


class RetrievalTrainingError(FlexBertError, ValueError):
    """Rows or a run that cannot teach the model anything (one line naming the file or the count)."""


def _has_text(row: dict, column: str) -> bool:
    return isinstance(row.get(column), str) and bool(row[column].strip())


def read_pairs(path: str, query_column: str = "query", positive_column: str = "positive",
               negative_column: str = "negative", skip_empty: bool = False) -> tuple[dict[str, list[str]], list[int]]:
    """Columns ``anchor``, ``positive`` (and ``negative`` when any row has one) from any table
    format of the reader registry (.jsonl, .csv, .tsv, ...), checked like an evaluation folder: a
    column a row lacks, a blank text (``skip_empty``: left out; their lines are returned beside the
    table) and a row repeating an earlier one are errors naming file:line."""
    records = [(r.line, r.value if isinstance(r.value, dict) else {}) for r in read_records(path)]
    triplets = any(_has_text(row, negative_column) for _, row in records)
    columns = (query_column, positive_column) + ((negative_column,) if triplets else ())
    table: dict[str, list] = {"anchor": [], "positive": [], **({"negative": []} if triplets else {})}
    skipped: list[int] = []
    first: dict[tuple, int] = {}
    for line, row in records:
        absent = [(c, flag) for c, flag in ((query_column, "query"), (positive_column, "positive")) if c not in row]
        if absent:
            raise InputError(f"{path}:{line}: no column '{absent[0][0]}' (columns: {', '.join(row) or 'none'}; "
                             f"name yours with --{absent[0][1]}-column)")
        blank = [c for c in columns if not _has_text(row, c)]
        if blank:
            if not skip_empty:
                other = " (other rows are triplets)" if blank[0] == negative_column else ""
                raise InputError(f"{path}:{line}: no text in column '{blank[0]}'{other}; fix it, or pass --skip-empty")
            skipped.append(line)
            continue
        key = tuple(row[c] for c in columns)
        if key in first:
            raise InputError(f"{path}:{line}: the same row as line {first[key]}; remove one (a copy is no new pair, "
                             "and copies leave batches without a negative)")
        first[key] = line
        for name, column in zip(("anchor", "positive", "negative"), columns):
            table[name].append(row[column])
    if len(table["anchor"]) < 2:
        raise InputError(f"{path}: {len(table['anchor'])} pair(s){' left' if skipped else ''}; in-batch negatives need at least 2")
    return table, skipped


class _Rows:
    """The table as the no-duplicates batch sampler reads a dataset (column names, rows by index)."""

    def __init__(self, table: dict[str, list[str]]):
        self.column_names = [c for c in ("anchor", "positive", "negative") if c in table]
        self.rows = list(zip(*(table[c] for c in self.column_names)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.column_names, self.rows[i]))


def check_batches(table: dict[str, list[str]], batch_size: int, seed: int, path: str) -> list[int]:
    """The rows per batch of the first epoch as sentence-transformers' no-duplicates sampler makes
    them (no text twice in a batch); pairs whose batches hold one pair - no in-batch negative, a loss
    of exactly 0 - beyond the one a row count may leave at the end are refused, with the count."""
    from sentence_transformers.sampler import NoDuplicatesBatchSampler

    sizes = [len(b) for b in NoDuplicatesBatchSampler(_Rows(table), batch_size=batch_size, drop_last=False,
                                                      generator=torch.Generator(), seed=seed)]
    single = sizes.count(1)
    if "negative" not in table and single > (1 if len(table["anchor"]) % batch_size == 1 else 0):
        raise RetrievalTrainingError(
            f"{path}: {single} of {len(sizes)} batches would hold a single pair, with no in-batch negative (a loss of 0: "
            f"nothing learned); a batch takes no text twice, and the {len(table['anchor'])} rows share their texts "
            f"(distinct queries: {len(set(table['anchor']))}, positives: {len(set(table['positive']))}); give pairs that "
            "share no text, or a negative column")
    return sizes


ZERO_LOSS_STEPS = 5  # this many first steps at a loss of exactly 0: nothing is being learned


class ZeroLossStop(TrainerCallback):
    """Stops the trainer when its first ``steps`` logged losses are all exactly 0 (the trainer logs
    them rounded to 4 places): a batch in which nothing can be told apart teaches nothing."""

    def __init__(self, steps: int = ZERO_LOSS_STEPS):
        self.steps, self.first, self.stopped = steps, [], False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and len(self.first) < self.steps:
            self.first.append(float(logs["loss"]))
            if len(self.first) == self.steps and not any(self.first):
                control.should_training_stop = self.stopped = True
        return control

    def check(self, losses: list[float]) -> None:
        """Refuse (one line) a run whose loss never left 0: stopped early, or shorter than ``steps``."""
        if self.stopped or (losses and not any(losses)):
            raise RetrievalTrainingError(
                f"the loss was exactly 0 for the first {len(self.first) or len(losses)} step(s): the batches hold nothing to tell "
                "apart, so nothing is learned; training stopped and nothing was written")


def reinitialize(model) -> None:
    """The same architecture with fresh weights (a baseline): the transformer's own initialisation
    (transformers' ``_init_weights``, applied to every module; ``init_weights()`` would skip the
    modules ``from_pretrained`` marked as initialised), seeded by the caller."""
    transformer = model[0].auto_model
    transformer.apply(transformer._init_weights)
    if hasattr(transformer, "tie_weights"):
        transformer.tie_weights()


def _loss(model, mini_batch_size: Optional[int]):
    from sentence_transformers import losses

    if mini_batch_size:
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size)
    return losses.MultipleNegativesRankingLoss(model)


def _evaluate(model, data: Optional[Beir]) -> Optional[dict]:
    return None if data is None else ranking_metrics(rank_dense(model, data), data.qrels)


def _train(model, table: dict, loss, *, epochs: int, batch_size: int, lr: float, warmup: float, seed: int,
           progress: bool, max_steps: int = -1) -> list[float]:
    """Run the trainer; the loss of every optimizer step (a run whose loss stays 0 is stopped and refused)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    with tempfile.TemporaryDirectory() as scratch:  # the trainer's output_dir: nothing is saved there
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
            warmup_ratio=warmup, seed=seed, data_seed=seed, batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=not progress,
            dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available())
        zero = ZeroLossStop()
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(table), loss=loss,
                                             callbacks=[zero])
        if not progress:  # without a bar the trainer prints every step's record instead: neither
            trainer.remove_callback(PrinterCallback)
        trainer.train()
    losses = [rec["loss"] for rec in trainer.state.log_history if "loss" in rec]
    zero.check(losses)
    return losses


@dataclass
class RetrievalFinetuneConfig:
    model: str = ""  # run folder, checkpoint, or SentenceTransformer folder
    train: str = ""  # a table of (query, positive[, negative]) rows
    out: str = ""  # the output SentenceTransformer folder (with result.json)
    eval: Optional[str] = None  # a BEIR folder scored before and after training
    split: str = "test"  # the eval folder's qrels split
    skip_empty: bool = False  # leave blank rows, queries and documents out (counted) instead of refusing them
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many steps (before the epochs end)
    batch_size: int = 32  # rows per batch: the in-batch negatives
    mini_batch_size: Optional[int] = None  # the cached loss (GradCache): embed the batch in chunks of this size
    lr: float = 2e-5
    warmup: float = 0.1  # fraction of the steps with a rising learning rate
    max_seq_len: Optional[int] = None
    seed: int = 0
    random_init: bool = False  # same architecture, fresh weights (a baseline)
    query_column: str = "query"
    positive_column: str = "positive"
    negative_column: str = "negative"
    progress: bool = True
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        for key in ("model", "train", "out"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup: must be in [0, 1), got {self.warmup}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size: in-batch negatives need at least 2 rows per batch, got {self.batch_size}")
        for key in ("epochs", "max_steps", "mini_batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")


@evaluation("retrieval-finetune", RetrievalFinetuneConfig)
def finetune_retrieval(cfg: RetrievalFinetuneConfig, log: Callable[[str], None] = print) -> Result:
    """Fine-tune, save a SentenceTransformer to ``cfg.out``; the result: with ``cfg.eval``, the
    BEIR metrics after training (before it in ``details``), the loss of every step."""
    check_output_dir(cfg.out, [cfg.model, cfg.train, cfg.eval])
    table, skipped = read_pairs(cfg.train, cfg.query_column, cfg.positive_column, cfg.negative_column, cfg.skip_empty)
    batches = check_batches(table, cfg.batch_size, cfg.seed, cfg.train)
    data = load_beir(cfg.eval, cfg.split, cfg.skip_empty) if cfg.eval is not None else None  # refused before training
    warnings = ([f"{cfg.train}: left out {len(skipped)} row(s) with a blank text (--skip-empty)"] if skipped else [])
    warnings += data.warnings if data is not None else []
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, "encoder", max_seq_len=cfg.max_seq_len)
    model = loaded.model
    if cfg.random_init:
        reinitialize(model)
    before = _evaluate(model, data)
    kind = "triplets" if "negative" in table else "pairs"
    log(f"[finetune_retrieval] {len(table['anchor'])} {kind}, batch {cfg.batch_size} (first epoch: {len(batches)} batches, "
        f"{min(batches)}-{max(batches)} rows), {cfg.epochs} epoch(s), "
        f"{'cached ' if cfg.mini_batch_size else ''}MultipleNegativesRankingLoss")
    losses = _train(model, table, _loss(model, cfg.mini_batch_size), epochs=cfg.epochs, batch_size=cfg.batch_size,
                    lr=cfg.lr, warmup=cfg.warmup, seed=cfg.seed, progress=cfg.progress, max_steps=cfg.max_steps or -1)
    after = _evaluate(model, data)
    prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.train, cfg.eval])
    model.save(cfg.out)
    details = {"rows": len(table["anchor"]), "kind": kind, "steps": len(losses), "losses": losses,
               "metrics_before": {cfg.split: before} if before is not None else None, **({"warnings": warnings} if warnings else {})}
    return Result("retrieval-finetune", loaded.ref(random_init=cfg.random_init), settings_of(cfg),
                  {cfg.split: after} if after is not None else {}, details)
