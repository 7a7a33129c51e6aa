"""Composer adapters for fine-tuning: the task metrics, the classifier as a ComposerModel, and the
callback that keeps the best validation epoch and stops early."""

from __future__ import annotations

import copy
from typing import Optional

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.models import ComposerModel
from torchmetrics import Metric

from flexbert.eval import metrics as M


class TaskMetric(Metric):
    """Collects predictions and labels over an evaluation; computes one of ``flexbert.eval.metrics``."""

    full_state_update = False

    def __init__(self, name: str, num_labels: int):
        super().__init__()
        self.name, self.num_labels = name, num_labels
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float().cpu())
        self.target.append(target.detach().float().cpu())

    def compute(self) -> torch.Tensor:
        p = torch.cat(self.preds).tolist() if isinstance(self.preds, list) else self.preds.tolist()
        t = torch.cat(self.target).tolist() if isinstance(self.target, list) else self.target.tolist()
        return torch.tensor(score(self.name, t, p, self.num_labels))


def score(name: str, target: list, preds: list, num_labels: int) -> float:
    if name in M.REGRESSION:
        return getattr(M, name)(target, preds)
    t, p = [int(x) for x in target], [int(x) for x in preds]
    return M.f1(t, p, num_labels) if name == "f1" else getattr(M, name)(t, p)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)


class FlexBertClassifier(ComposerModel):
    def __init__(self, model: torch.nn.Module, metric_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self._metrics = {n: TaskMetric(n, model.config.num_labels) for n in metric_names}

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
