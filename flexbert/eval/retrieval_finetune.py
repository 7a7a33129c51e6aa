"""Retrieval fine-tuning: (query, positive[, negative]) rows, in-batch negatives.

Driven by sentence-transformers' own ``SentenceTransformerTrainer`` (the maintained recipe: a
no-duplicates batch sampler so no batch holds a passage twice, linear decay after warmup, a progress
bar, per-step loss records) with ``MultipleNegativesRankingLoss``: every query against every passage
of its batch (and the hard negatives, when the file has a negative column), cross-entropy towards
its own.  ``mini_batch_size`` switches to ``CachedMultipleNegativesRankingLoss`` (GradCache), which
gives a large batch of negatives at the memory of a small one.  The trainer needs ``datasets`` and
``accelerate`` (pinned with the 'retrieval' extra to releases that accept transformers 4.53's
huggingface_hub).  The model is anything ``load_encoder`` takes (a run folder or checkpoint is
exported first); the output is a SentenceTransformer folder, for ``scripts/eval_retrieval.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, Optional

from flexbert.data.readers import InputError, read_records


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
    from flexbert.data.beir import load_beir
    from flexbert.eval.retrieval import rank_dense, ranking_metrics

    data = load_beir(eval_dir, split)
    return ranking_metrics(rank_dense(model, data), data.qrels)


def _train(model, table: dict, loss, *, epochs: int, batch_size: int, lr: float, warmup: float, seed: int,
           progress: bool, max_steps: int = -1) -> list[float]:
    """Run the trainer; the loss of every optimizer step."""
    import torch
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
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        trainer.train()
    return [rec["loss"] for rec in trainer.state.log_history if "loss" in rec]


def finetune_retrieval(model_path: str, pairs_path: str, out: str, *, eval_dir: Optional[str] = None,
                       split: str = "test", epochs: int = 1, batch_size: int = 32, lr: float = 2e-5,
                       warmup: float = 0.1, mini_batch_size: Optional[int] = None, max_seq_len: Optional[int] = None,
                       seed: int = 0, random_init: bool = False, max_steps: Optional[int] = None, overwrite: bool = False, columns: tuple[str, str, str] = ("query", "positive", "negative"),
                       progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Fine-tune, save a SentenceTransformer to ``out``, return (and write beside it) a summary:
    settings, the loss of every step and, with ``eval_dir``, the BEIR metrics before and after."""
    from transformers import set_seed

    from flexbert.data.outputs import check_output_dir, prepare_output_dir
    from flexbert.data.beir import load_beir
    from flexbert.eval.retrieval import load_encoder

    check_output_dir(out, [model_path, pairs_path, eval_dir])
    table = read_pairs(pairs_path, *columns)
    if eval_dir is not None:
        load_beir(eval_dir, split)  # a bad folder fails before any training
    set_seed(seed)
    model = load_encoder(model_path, max_seq_len)
    if random_init:
        reinitialize(model)
    before = _evaluate(model, eval_dir, split)
    kind = "triplets" if "negative" in table else "pairs"
    log(f"[finetune_retrieval] {len(table['anchor'])} {kind}, batch {batch_size}, {epochs} epoch(s), "
        f"{'cached ' if mini_batch_size else ''}MultipleNegativesRankingLoss")
    losses = _train(model, table, _loss(model, mini_batch_size), epochs=epochs, batch_size=batch_size, lr=lr,
                    warmup=warmup, seed=seed, progress=progress, max_steps=max_steps or -1)
    after = _evaluate(model, eval_dir, split)
    prepare_output_dir(out, overwrite=overwrite, inputs=[model_path, pairs_path, eval_dir])
    model.save(out)
    info = {"model": model_path, "pairs": pairs_path, "rows": len(table["anchor"]), "kind": kind, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "warmup": warmup, "mini_batch_size": mini_batch_size, "seed": seed,
            "random_init": random_init, "max_steps": max_steps,
            "steps": len(losses), "losses": losses, "eval": eval_dir, "split": split,
            "metrics_before": before, "metrics_after": after}
    with open(os.path.join(out, "finetune_retrieval.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
