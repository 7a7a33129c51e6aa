"""Fine-tuning on Composer: the classifier as a ComposerModel, its metrics, the callback that keeps
the best validation epoch, and the Trainer, built from pretraining's recipe
(``flexbert/train/recipe.py``: device, precision, shared settings; StableAdamW; the token-exact
schedule stepper; FlexBERT's loggers).

Which task metrics exist and how they are computed is evaluation's business
(``flexbert/eval/metrics.py``): they come in as ``{name: score(target, preds) -> float}``.
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Optional

import torch
from composer import Trainer
from composer.core import Callback, DataSpec, Evaluator, State
from composer.loggers import Logger
from composer.models import ComposerModel
from composer.utils import reproducibility
from torchmetrics import Metric

from flexbert.env import quiet_known_warnings
from flexbert.train.callbacks import ScheduleStepper
from flexbert.train.loggers import ConsoleLogger, JSONLLogger
from flexbert.train.optim import OptimizerConfig, build_optimizer
from flexbert.train.recipe import resolve_device, resolve_precision, trainer_settings
from flexbert.train.schedulers import parse_scheduler

Score = Callable[[list, list], float]


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Class ids (argmax), or the value itself for a one-output regression head."""
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)


class TaskMetric(Metric):
    """Collects predictions and labels over an evaluation; ``score`` turns them into one number."""

    full_state_update = False

    def __init__(self, score: Score):
        super().__init__()
        self.score = score
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float().cpu())
        self.target.append(target.detach().float().cpu())

    def compute(self) -> torch.Tensor:
        p = torch.cat(self.preds).tolist() if isinstance(self.preds, list) else self.preds.tolist()
        t = torch.cat(self.target).tolist() if isinstance(self.target, list) else self.target.tolist()
        return torch.tensor(self.score(t, p))


class FlexBertClassifier(ComposerModel):
    def __init__(self, model: torch.nn.Module, scores: dict[str, Score]):
        super().__init__()
        self.model = model
        self._metrics = {n: TaskMetric(s) for n, s in scores.items()}

    def forward(self, batch):
        return self.model(input_ids=batch["input_ids"], cu_seqlens=batch["cu_seqlens"],
                          max_seqlen=int(batch["max_seqlen"]), labels=batch.get("labels"))

    def loss(self, outputs, batch):
        return outputs.loss

    def eval_forward(self, batch, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False):
        return {} if is_train else self._metrics

    def update_metric(self, batch, outputs, metric) -> None:
        metric.update(predictions(outputs.logits), batch["labels"])


class KeepBest(Callback):
    """After each validation: print the metrics, keep the best weights, stop after ``patience``
    evaluations without improvement."""

    def __init__(self, metric: str, higher_is_better: bool, patience: int, names: tuple[str, ...]):
        self.metric, self.higher, self.patience, self.names = metric, higher_is_better, patience, names
        self.best: Optional[float] = None
        self.best_epoch = 0
        self.best_state: Optional[dict] = None
        self.history: list[dict] = []
        self._bad = 0

    def eval_end(self, state: State, logger: Logger) -> None:
        values = {n: float(m.compute()) for n, m in state.eval_metrics["validation"].items()}
        epoch = int(state.timestamp.epoch) + (0 if state.timestamp.batch_in_epoch == 0 else 1)
        self.history.append({"epoch": epoch, **values})
        v = values[self.metric]
        better = self.best is None or (v > self.best if self.higher else v < self.best)
        if better:
            self.best, self.best_epoch, self._bad = v, epoch, 0
            self.best_state = copy.deepcopy({k: t.detach().cpu() for k, t in state.model.model.state_dict().items()})
        else:
            self._bad += 1
        shown = " ".join(f"{n} {values[n]:.4f}" for n in self.names)
        print(f"[validation @ epoch {epoch}] {shown}{' (best)' if better else ''}", flush=True)
        if self.patience and self._bad >= self.patience:
            print(f"[finetune] no {self.metric} improvement for {self._bad} epochs: stopping early", flush=True)
            state.stop_training()


def task_data_spec(dl) -> DataSpec:
    """A fine-tuning batch (examples packed end to end) is one microbatch: it cannot be split by rows."""
    return DataSpec(
        dl,
        split_batch=lambda batch, n: [batch],
        get_num_samples_in_batch=lambda batch: int(batch["cu_seqlens"].numel() - 1),
        get_num_tokens_in_batch=lambda batch: int(batch["input_ids"].numel()),
    )


def build_classifier_trainer(model: torch.nn.Module, scores: dict[str, Score], keep: KeepBest, *, train_dl,
                             validation_dl, out: str, lr: float, weight_decay: float, warmup: float, epochs: int,
                             device: str = "auto", seed: int = 17, log_interval: int = 20) -> Trainer:
    """A Trainer for ``model`` (a FlexBertForSequenceClassification): linear warmup over ``warmup``
    of the run, then linear decay to 0; validation after every epoch."""
    quiet_known_warnings()
    device = resolve_device(device)
    composer_model = FlexBertClassifier(model, scores)
    optimizer = build_optimizer(composer_model, OptimizerConfig(lr=lr, weight_decay=weight_decay), on_cuda=device == "gpu")
    scheduler = parse_scheduler({"name": "warmup_stable_decay", "t_warmup": f"{warmup:g}dur",
                                 "t_decay": f"{1 - warmup:g}dur", "decay_shape": "linear", "alpha_f": 0.0})
    return Trainer(
        model=composer_model,
        run_name=os.path.basename(os.path.abspath(out)),
        train_dataloader=task_data_spec(train_dl),
        eval_dataloader=Evaluator(label="validation", dataloader=task_data_spec(validation_dl), metric_names=list(scores)),
        eval_interval="1ep",
        # in batches, so that "dur" in the schedule advances every step (an "ep" duration only
        # advances at epoch ends: the LR would stay at its start value for the whole first epoch)
        max_duration=f"{epochs * len(train_dl)}ba",
        optimizers=optimizer,
        schedulers=scheduler,
        device_train_microbatch_size=train_dl.batch_size,
        callbacks=[ScheduleStepper(), keep],
        loggers=[ConsoleLogger(log_interval), JSONLLogger(os.path.join(out, "metrics.jsonl"))],
        save_folder=None,
        **trainer_settings(device=device, precision=resolve_precision("auto", device), seed=seed),
    )


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs (Composer's own seeding), before a model is built."""
    reproducibility.seed_all(seed)
