"""The contrastive stage's machinery: its loss, its trainer, its work folder (resume), its progress.

Everything here is sentence-transformers' own (5.1.2), assembled, not rewritten:

* the loss: ``MultipleNegativesRankingLoss`` (each query against every passage of the batch and
  the hard negatives), or ``CachedMultipleNegativesRankingLoss`` (GradCache: the same loss, the
  batch embedded in mini-batches, so a batch of thousands fits the memory of a few dozen),
  wrapped in ``MatryoshkaLoss`` for nested embedding widths; or, for SPLADE, ``SpladeLoss`` over
  ``SparseMultipleNegativesRankingLoss`` (with the FLOPS regularizers that keep vectors sparse).
  On several processes ``gather_across_devices`` gathers every process's passages (with their
  gradients) so each query meets the whole global batch as negatives;
* the batches: the trainer's no-duplicates batch sampler, over the global batch, in the order
  ``seed`` draws (``build_trainer`` hands it the seed).  Accelerate's ``split_batches`` hands each
  process one slice of that batch, so the gathered batch is exactly the sampled one: no text twice
  in it, hence no query's positive (nor a twin of it) among another query's negatives.
  ``dataloader_drop_last`` on several processes: the gather needs equal slices;
* the trainer: ``SentenceTransformerTrainer`` / ``SparseEncoderTrainer`` (transformers' Trainer:
  DDP over gloo or NCCL, linear decay after warmup, checkpoints with optimizer, scheduler and RNG
  state, and their resume);
* one repair: torch 2.7's ``torch.distributed.nn.all_gather`` (what ``gather_across_devices``
  calls) sums the gradients in its backward by an all-to-all on every backend but NCCL, and gloo
  has no all-to-all (pytorch/pytorch#88245, added after 2.7).  On a gloo process group (CPU) the
  training runs with an all-gather whose backward sums by all-reduce instead (``gloo_gather``):
  the same gradient, world-size times the traffic of NCCL's reduce-scatter;
* the work folder ``OUT/work``: the trainer's checkpoints and the settings they were made with; a
  rerun with the same settings continues from the newest complete checkpoint, other settings are
  refused (``--overwrite`` starts over); it is removed once the model is saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed.nn  # noqa: F401 - the all_gather that gather_across_devices calls (gloo_gather)
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from flexbert.config import ConfigError
from flexbert.data.outputs import OutputError, prepare_output_dir, write_json

WORK = "work"
SETTINGS = "settings.json"
UNTRACKED = ("progress", "overwrite", "config", "save_steps")  # may change between a run and its resume


def build_loss(model, cfg, world_size: int) -> torch.nn.Module:
    """The stage's loss for ``cfg`` (a RetrievalFinetuneConfig) on ``world_size`` processes."""
    gather = cfg.gather and world_size > 1
    if cfg.sparse:
        from sentence_transformers.sparse_encoder import losses as sparse_losses

        inner = sparse_losses.SparseMultipleNegativesRankingLoss(model, gather_across_devices=gather)
        return sparse_losses.SpladeLoss(model, inner, document_regularizer_weight=cfg.document_regularizer,
                                        query_regularizer_weight=cfg.query_regularizer)
    from sentence_transformers import losses

    if cfg.mini_batch_size:
        base = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size,
                                                         gather_across_devices=gather)
    else:
        base = losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    if cfg.matryoshka_dims:
        return losses.MatryoshkaLoss(model, base, matryoshka_dims=sorted(cfg.matryoshka_dims, reverse=True))
    return base


def training_args(cfg, work: str, world_size: int, prompts) -> Any:
    """The trainer's arguments: ``cfg.batch_size`` is the global batch (split over the processes)."""
    from sentence_transformers.sparse_encoder import SparseEncoderTrainingArguments
    from sentence_transformers.training_args import (
        BatchSamplers,
        MultiDatasetBatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    if cfg.batch_size % world_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} does not split evenly over {world_size} processes")
    cls = SparseEncoderTrainingArguments if cfg.sparse else SentenceTransformerTrainingArguments
    return cls(
        output_dir=work, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size, accelerator_config={"split_batches": True},
        dataloader_drop_last=world_size > 1, learning_rate=cfg.lr, warmup_ratio=cfg.warmup, seed=cfg.seed,
        data_seed=cfg.seed, batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers(cfg.mix), prompts=prompts,
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        report_to="none", disable_tqdm=not cfg.progress, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), ddp_find_unused_parameters=False,
        use_cpu=not torch.cuda.is_available())  # without it, torchrun on CPU trains N unrelated copies


class Progress(TrainerCallback):
    """One line at the start (and where a resume starts), then every tenth of the steps when no
    progress bar is shown; the main process only."""

    def __init__(self, log: Callable[[str], None], bar: bool):
        self.log, self.bar, self.t0, self.first = log, bar, 0.0, 0

    def on_train_begin(self, args, state, control, **kw):
        self.t0, self.first = time.time(), state.global_step
        if state.is_world_process_zero and state.global_step:
            self.log(f"[finetune_retrieval] resumed at step {state.global_step} of {state.max_steps}")

    def on_log(self, args, state, control, logs=None, **kw):
        every = max(1, state.max_steps // 10)
        if self.bar or not state.is_world_process_zero or "loss" not in (logs or {}):
            return
        if state.global_step % every == 0 or state.global_step == state.max_steps:
            done = state.global_step - self.first
            rate = (time.time() - self.t0) / max(1, done)
            self.log(f"[finetune_retrieval] step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                     f"({rate * done:.0f}s, ~{rate * (state.max_steps - state.global_step):.0f}s left)")


def build_trainer(model, data, loss, args, callbacks=()) -> Any:
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer

    base = SparseEncoderTrainer if type(model).__name__ == "SparseEncoder" else SentenceTransformerTrainer

    class SeededTrainer(base):
        """The batch order follows ``args.seed``: sentence-transformers 5.1.2 builds each dataset's
        batch sampler without the seed (so at 0), and its no-duplicates sampler reseeds its generator
        with that 0 every epoch, so without this every seed trains on the same batches."""

        def get_batch_sampler(self, *args, **kwargs):
            return super().get_batch_sampler(*args, **{**kwargs, "seed": self.args.seed})

    if args.disable_tqdm and hasattr(model, "model_card_data"):
        # without bars the model card's widget examples are not embedded; sentence-transformers
        # still samples their candidates under a short bar of its own ("Computing widget examples")
        # that neither setting reaches (5.1.2)
        model.model_card_data.generate_widget_examples = False
    trainer = SeededTrainer(model=model, args=args, train_dataset=data, loss=loss, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints every step's record: the bar or Progress instead
    return trainer


class _AllGatherSummed(torch.autograd.Function):
    """``torch.distributed.nn.all_gather`` with a backward that gloo has: every process's gradient
    for every copy summed by one all-reduce, this process's own slice kept."""

    @staticmethod
    def forward(ctx, tensor):
        ctx.rank = torch.distributed.get_rank()
        out = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(out, tensor.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        summed = torch.stack([g.contiguous() for g in grads])
        torch.distributed.all_reduce(summed)
        return summed[ctx.rank]


@contextlib.contextmanager
def gloo_gather() -> Iterator[None]:
    """Inside, ``torch.distributed.nn.all_gather`` is ``_AllGatherSummed`` on a process group that
    is not NCCL's alone (gloo, or "cpu:gloo,cuda:nccl" as accelerate starts it on CPU): those are
    where torch's own backward takes the all-to-all."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() == dist.Backend.NCCL:
        yield
        return
    original = dist.nn.all_gather
    dist.nn.all_gather = lambda tensor, group=None: _AllGatherSummed.apply(tensor)
    try:
        yield
    finally:
        dist.nn.all_gather = original


def train(trainer, resume: Optional[str] = None) -> None:
    """``trainer.train``, from ``resume`` (a checkpoint folder) when given."""
    with gloo_gather():
        trainer.train(resume_from_checkpoint=resume)


# --------------------------------------------------------------------------- the work folder
def tracked_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in UNTRACKED}


def work_folder(out: str) -> str:
    return os.path.join(out, WORK)


def barrier() -> None:
    """Wait for every process (nothing to wait for on one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def open_work(out: str, settings: dict, overwrite: bool, inputs: list, main_process: bool) -> str:
    """``OUT/work``, fresh or (same settings, no result yet) as a killed run left it; the main
    process prepares it (the caller waits for it before the others read it)."""
    work = work_folder(out)
    if not main_process:
        return work
    saved = os.path.join(work, SETTINGS)
    if not overwrite and os.path.isdir(out) and set(os.listdir(out)) == {WORK} and os.path.exists(saved):
        with open(saved) as f:
            before = json.load(f)
        changed = sorted(k for k in set(before) | set(tracked_settings(settings))
                         if before.get(k) != tracked_settings(settings).get(k))
        if changed:
            k = changed[0]
            raise OutputError(f"{saved}: a killed run with {k}={before.get(k)!r} (now {settings.get(k)!r}); "
                              "rerun it as it was to continue, or pass --overwrite to start over")
        return work
    prepare_output_dir(out, overwrite=overwrite, inputs=inputs)
    os.makedirs(work)
    write_json(saved, tracked_settings(settings))
    return work


def resume_checkpoint(work: str) -> Optional[str]:
    """The newest complete checkpoint in ``work`` (its trainer_state.json is written last), or None."""
    if not os.path.isdir(work):
        return None
    steps = sorted((int(n[len(PREFIX_CHECKPOINT_DIR) + 1:]), n) for n in os.listdir(work)
                   if n.startswith(PREFIX_CHECKPOINT_DIR + "-") and n[len(PREFIX_CHECKPOINT_DIR) + 1:].isdigit()
                   and os.path.exists(os.path.join(work, n, "trainer_state.json")))
    return os.path.join(work, steps[-1][1]) if steps else None


def close_work(out: str) -> None:
    shutil.rmtree(work_folder(out), ignore_errors=True)
