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
from transformers.trainer_callback import PrinterCallback

from flexbert.config import ConfigError
from flexbert.data.beir import load_beir
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.data.readers import InputError, read_records
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.eval.retrieval import rank_dense, ranking_metrics
from flexbert.weights.load import load_model


def read_pairs(path: str, query_column: str = "query", positive_column: str = "positive",
               negative_column: str = "negative") -> dict[str, list[str]]:
    """Columns ``anchor``, ``positive`` (and ``negative`` when every row has one) from any table
    format of the reader registry (.jsonl, .csv, .tsv, ...)."""
    def text(row: dict, column: str) -> bool:
        return isinstance(row.get(column), str) and bool(row[column].strip())

    rows = []
    for r in read_records(path):
        row = r.value if isinstance(r.value, dict) else {}
        missing = [c for c in (query_column, positive_column) if not text(row, c)]
        if missing:
            raise InputError(f"{path}:{r.line}: no text in column '{missing[0]}' (columns: {', '.join(row) or 'none'})")
        rows.append((r.line, row))
    if len(rows) < 2:
        raise InputError(f"{path}: {len(rows)} pair(s); in-batch negatives need at least 2")
    table = {"anchor": [row[query_column] for _, row in rows], "positive": [row[positive_column] for _, row in rows]}
    has_negative = [text(row, negative_column) for _, row in rows]
    if any(has_negative):
        if not all(has_negative):
            line = rows[has_negative.index(False)][0]
            raise InputError(f"{path}:{line}: no text in column '{negative_column}' (other rows are triplets)")
        table["negative"] = [row[negative_column] for _, row in rows]
    return table


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


def _evaluate(model, eval_dir: Optional[str], split: str) -> Optional[dict]:
    if eval_dir is None:
        return None
    data = load_beir(eval_dir, split)
    return ranking_metrics(rank_dense(model, data), data.qrels)


def _train(model, table: dict, loss, *, epochs: int, batch_size: int, lr: float, warmup: float, seed: int,
           progress: bool, max_steps: int = -1) -> list[float]:
    """Run the trainer; the loss of every optimizer step."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    with tempfile.TemporaryDirectory() as scratch:  # the trainer's output_dir: nothing is saved there
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
            warmup_ratio=warmup, seed=seed, data_seed=seed, batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=not progress,
            dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available())
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(table), loss=loss)
        if not progress:  # without a bar the trainer prints every step's record instead: neither
            trainer.remove_callback(PrinterCallback)
        trainer.train()
    return [rec["loss"] for rec in trainer.state.log_history if "loss" in rec]


@dataclass
class RetrievalFinetuneConfig:
    model: str = ""  # run folder, checkpoint, or SentenceTransformer folder
    train: str = ""  # a table of (query, positive[, negative]) rows
    out: str = ""  # the output SentenceTransformer folder (with result.json)
    eval: Optional[str] = None  # a BEIR folder scored before and after training
    split: str = "test"  # the eval folder's qrels split
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
    table = read_pairs(cfg.train, cfg.query_column, cfg.positive_column, cfg.negative_column)
    if cfg.eval is not None:
        load_beir(cfg.eval, cfg.split)  # a bad folder fails before any training
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, "encoder", max_seq_len=cfg.max_seq_len)
    model = loaded.model
    if cfg.random_init:
        reinitialize(model)
    before = _evaluate(model, cfg.eval, cfg.split)
    kind = "triplets" if "negative" in table else "pairs"
    log(f"[finetune_retrieval] {len(table['anchor'])} {kind}, batch {cfg.batch_size}, {cfg.epochs} epoch(s), "
        f"{'cached ' if cfg.mini_batch_size else ''}MultipleNegativesRankingLoss")
    losses = _train(model, table, _loss(model, cfg.mini_batch_size), epochs=cfg.epochs, batch_size=cfg.batch_size,
                    lr=cfg.lr, warmup=cfg.warmup, seed=cfg.seed, progress=cfg.progress, max_steps=cfg.max_steps or -1)
    after = _evaluate(model, cfg.eval, cfg.split)
    prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.train, cfg.eval])
    model.save(cfg.out)
    details = {"rows": len(table["anchor"]), "kind": kind, "steps": len(losses), "losses": losses,
               "metrics_before": {cfg.split: before} if before is not None else None}
    return Result("retrieval-finetune", loaded.ref(random_init=cfg.random_init), settings_of(cfg),
                  {cfg.split: after} if after is not None else {}, details)
