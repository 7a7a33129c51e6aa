"""One step of the contrastive stage, recorded: the loss, the gradients after the step's backward
(DDP-averaged on several processes) and the rows of every global batch.  Run under
``torchrun --nproc-per-node 2 tests/retrieval_ranks.py ENCODER PAIRS BATCH MINI OUT.json`` (gloo
on CPU; the plain loss, then the cached one with mini-batches of MINI) by
tests/test_retrieval_stage.py, and in-process on one process for the reference.

It builds the stage from the stage's own pieces (flexbert/eval/contrastive.py: the loss with
negatives gathered across processes, the trainer arguments that split the global batch, the
trainer), so what it records is what ``flexbert finetune-retrieval`` trains with."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Optional

import torch
from transformers import TrainerCallback, set_seed

from flexbert.env import dist_env
from flexbert.eval.contrastive import build_loss, build_trainer, train, training_args
from flexbert.eval.pairs import pair_datasets
from flexbert.eval.retrieval_finetune import RetrievalFinetuneConfig
from flexbert.weights.load import load_model


class Recording(torch.nn.Module):
    """The stage's loss, its value kept (the trainer's own log rounds it to 4 decimals)."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss, self.model, self.values = loss, loss.model, []

    def forward(self, features, labels):
        value = self.loss(features, labels)
        self.values.append(value.detach().clone())
        return value


class Gradients(TrainerCallback):
    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        if not self.grads:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def one_step(encoder: str, pairs: str, batch_size: int, mini_batch_size: Optional[int] = None) -> dict:
    """The first step's loss (averaged over the processes), gradients and global batches' rows."""
    env = dist_env()
    cfg = RetrievalFinetuneConfig(model=encoder, train=pairs, out="unused", batch_size=batch_size, max_steps=1, lr=1e-3,
                                  warmup=0.0, seed=3, progress=False, mini_batch_size=mini_batch_size)
    set_seed(cfg.seed)
    model = load_model(encoder, "encoder").model
    data, _, _ = pair_datasets([pairs])
    with tempfile.TemporaryDirectory() as work:
        args = training_args(cfg, work, env.world_size, None)
        loss = Recording(build_loss(model, cfg, env.world_size))
        grads = Gradients()
        trainer = build_trainer(model, data, loss, args, [grads])
        batches = [list(b) for b in trainer.get_train_dataloader().batch_sampler]  # this process's slices
        train(trainer)
    value = loss.values[0]
    if env.world_size > 1:
        gathered = [None] * env.world_size
        torch.distributed.all_gather_object(gathered, batches)
        batches = [sum((g[i] for g in gathered), []) for i in range(len(batches))]  # the global batches
        torch.distributed.all_reduce(value)
        value = value / env.world_size
    return {"loss": float(value), "grads": {n: g.tolist() for n, g in grads.grads.items()},
            "batches": [[data[i]["positive"] for i in b] for b in batches],
            "anchors": [[data[i]["anchor"] for i in b] for b in batches], "processes": env.world_size}


if __name__ == "__main__":
    encoder, pairs, batch, mini, out = sys.argv[1:6]
    record = {"plain": one_step(encoder, pairs, int(batch)), "cached": one_step(encoder, pairs, int(batch), int(mini))}
    if dist_env().rank == 0:
        with open(out + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(out + ".tmp", out)
