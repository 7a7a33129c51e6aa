"""Fine-tune a pretrained FlexBERT / ModernBERT on a classification or regression task: the
``classification`` and ``regression`` evaluations (``flexbert finetune``).

The training stack is pretraining's: a Composer Trainer, StableAdamW with its parameter groups,
the token-exact LR schedule stepper and the JSONL/console loggers (flexbert/eval/classifier.py),
around ``FlexBertForSequenceClassification`` fed packed, unpadded batches (``flexbert/eval/data.py``).
The schedule is linear warmup over ``warmup`` of the run then linear decay to 0; the model is
evaluated on the validation file after every epoch, the best epoch's weights are kept, and training
stops after ``patience`` epochs without improvement.  ``OUT/result.json`` gets the final metrics
(flexbert/eval/evaluation.py's schema), ``OUT/metrics.jsonl`` every step, ``OUT/hf`` the model
(written by flexbert/weights/writer.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from flexbert.config import ConfigError, options_from_file
from flexbert.data.outputs import prepare_output_dir
from flexbert.eval import metrics as M
from flexbert.eval.classifier import KeepBest, build_classifier_trainer, predictions, seed_everything
from flexbert.eval.data import EncodedTask, encode_texts, loader
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.eval.tasks import TASK_KINDS, load_task, task_kind
from flexbert.model.model import FlexBertForSequenceClassification
from flexbert.weights.load import ModelLoadError, classifier_model, load_pretrained
from flexbert.weights.writer import ModelWriter


@dataclass
class FinetuneConfig:
    model: str = ""
    train: str = ""
    validation: str = ""
    out: str = ""
    test: Optional[str] = None
    text_columns: list = field(default_factory=lambda: ["sentence"])
    label_column: str = "label"
    task: str = "classification"  # a TASK_KINDS name: classification | regression
    lr: float = 5e-5
    epochs: int = 3
    batch_size: int = 32
    warmup: float = 0.1  # fraction of the run
    weight_decay: float = 1e-6
    max_seq_len: int = 512
    seed: int = 17
    patience: int = 2  # epochs without improvement before stopping; 0: never stop early
    metric: Optional[str] = None  # early-stopping metric; default: the task kind's first
    pooling: Optional[str] = None  # cls | mean; default: the model's
    dropout: Optional[float] = None  # classifier dropout; default: the model's
    tokenizer: Optional[str] = None  # default: the model's
    random_init: bool = False  # the same architecture from a fresh init (a baseline)
    device: str = "auto"
    log_interval: int = 20
    config: Optional[str] = None  # the YAML these options came from (a sweep's base), for the record
    overwrite: bool = False  # replace a non-empty out whole (flexbert/data/outputs.py)

    def validate(self, prefix: str = "") -> None:
        kind = TASK_KINDS.get(self.task)
        if kind is None:
            task_kind(self.task)  # the one-line unknown-choice error
        for key in ("epochs", "batch_size", "max_seq_len"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        least = 3 if len(self.text_columns) < 2 else 5  # the special tokens and one token of each text
        if self.max_seq_len < least:  # below it no text is left, or the tokenizer does not cut at all
            shape = "[CLS] text [SEP]" if least == 3 else "[CLS] text [SEP] text [SEP]"
            raise ConfigError(f"max_seq_len: must be >= {least} ({shape}, a token of text each), got {self.max_seq_len}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup: a fraction of the run in [0, 1), got {self.warmup}")
        if self.weight_decay < 0 or self.patience < 0 or self.log_interval < 1:
            raise ConfigError("weight_decay and patience must be >= 0, log_interval >= 1")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 1 <= len(self.text_columns) <= 2:
            raise ConfigError(f"text_columns: one or two columns, got {self.text_columns}")
        for key in ("model", "train", "validation", "out"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required (--{key} or in --config)")
        if self.metric is not None and self.metric not in kind.metrics:
            raise ConfigError(f"metric: '{self.metric}' is not a {self.task} metric; valid: {', '.join(kind.metrics)}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return task_kind(self.task).metrics

    @property
    def main_metric(self) -> str:
        return self.metric or self.metric_names[0]


def load_finetune_config(path: Optional[str], given: dict) -> FinetuneConfig:
    """Options from a YAML file of FinetuneConfig keys (a fine-tuning sweep's ``base``), then the
    ``given`` ones (command line) over them; unknown keys, wrong types and bad values fail in one line."""
    return options_from_file(FinetuneConfig, path, given)

# ----------------------------------------------------------------------------- the run
@torch.no_grad()
def predict(model: torch.nn.Module, data, batch_size: int = 64) -> torch.Tensor:
    """Logits (N, num_labels) over a dataset, in order."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for batch in loader(data, batch_size, shuffle=False):
        out.append(model(input_ids=batch["input_ids"].to(device), cu_seqlens=batch["cu_seqlens"].to(device),
                         max_seqlen=int(batch["max_seqlen"])).logits.float().cpu())
    return torch.cat(out)


def evaluate(model, data, cfg: FinetuneConfig, num_labels: int) -> dict[str, float]:
    preds = predictions(predict(model, data)).tolist()
    return {n: score(n, list(data.labels), preds, num_labels) for n in cfg.metric_names}


def _datasets(cfg: FinetuneConfig, tokenizer_dir: str):
    train, labels = load_task(cfg.train, cfg.text_columns, cfg.label_column, None, cfg.task)
    val, _ = load_task(cfg.validation, cfg.text_columns, cfg.label_column, labels, cfg.task)
    test = load_task(cfg.test, cfg.text_columns, cfg.label_column, labels, cfg.task, require_labels=False)[0] if cfg.test else None
    enc = {name: EncodedTask(encode_texts(tokenizer_dir, d.texts, cfg.max_seq_len), d.labels, labels.regression)
           for name, d in (("train", train), ("validation", val), ("test", test)) if d is not None}
    return enc, labels


def build_classifier(cfg: FinetuneConfig, pre, num_labels: int):
    overrides = {}
    if cfg.pooling is not None:
        overrides["classifier_pooling"] = cfg.pooling
    if cfg.dropout is not None:
        overrides["classifier_dropout"] = cfg.dropout
    model = classifier_model(pre, num_labels, **overrides)
    if cfg.random_init:  # the same architecture, weights from the model's own init
        model = FlexBertForSequenceClassification(model.config)
    return model


def scores(cfg: FinetuneConfig, num_labels: int) -> dict:
    """{metric name: score(target, preds)} for the task's metrics (``flexbert/eval/metrics.py``)."""
    return {n: (lambda t, p, n=n: score(n, t, p, num_labels)) for n in cfg.metric_names}


def score(name: str, target: list, preds: list, num_labels: int) -> float:
    if name in M.REGRESSION:
        return getattr(M, name)(target, preds)
    t, p = [int(x) for x in target], [int(x) for x in preds]
    return M.f1(t, p, num_labels) if name == "f1" else getattr(M, name)(t, p)


def _trainer(cfg: FinetuneConfig, model, enc, keep: KeepBest, num_labels: int):
    return build_classifier_trainer(
        model, scores(cfg, num_labels), keep,
        train_dl=loader(enc["train"], cfg.batch_size, shuffle=True, seed=cfg.seed),
        validation_dl=loader(enc["validation"], 64, False),
        out=cfg.out, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=cfg.warmup, epochs=cfg.epochs,
        device=cfg.device, seed=cfg.seed, log_interval=cfg.log_interval)


def _prepare(cfg: FinetuneConfig):
    """The model, its tokenizer (checked: the model's own, fitting its embeddings), the encoded
    files, the writer of ``OUT/hf``; the output folder created.  Everything that can be refused is
    refused here, before training."""
    pre = load_pretrained(cfg.model)
    tok = cfg.tokenizer or pre.tokenizer_dir
    if not tok:
        raise ModelLoadError(f"--model {cfg.model}: no tokenizer found with it; pass --tokenizer DIR")
    inputs = [pre.path, cfg.train, cfg.validation, cfg.test, tok]
    writer = ModelWriter("finetune", os.path.join(cfg.out, "hf"), inputs=inputs, keep=[cfg.model])
    writer.tokenizer(tok, pre.tokenizer_fingerprint, f"model {pre.path}", pre.config.vocab_size)
    enc, labels = _datasets(cfg, tok)
    prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=inputs, keep=[cfg.model])
    return pre, tok, enc, labels, writer


def run_finetune(cfg: FinetuneConfig) -> Result:
    """Train, keep the best validation epoch, score validation (and test), write ``OUT/``."""
    t0 = time.time()
    pre, tok, enc, labels, writer = _prepare(cfg)
    seed_everything(cfg.seed)
    model = build_classifier(cfg, pre, labels.num_labels)
    keep = KeepBest(cfg.main_metric, cfg.main_metric not in ("loss",), cfg.patience, cfg.metric_names)
    print(f"[finetune] {cfg.model} ({pre.kind}{', random init' if cfg.random_init else ''}) on {cfg.train}: "
          f"{len(enc['train'])} train / {len(enc['validation'])} validation examples, {labels.num_labels} labels", flush=True)
    trainer = _trainer(cfg, model, enc, keep, labels.num_labels)
    trainer.fit()
    epochs_run = keep.history[-1]["epoch"] if keep.history else 0
    trainer.close()
    if keep.best_state is not None:
        model.load_state_dict(keep.best_state)
    model = model.cpu().eval()
    metrics = {"validation": evaluate(model, enc["validation"], cfg, labels.num_labels)}
    if "test" in enc and enc["test"].labels is not None:
        metrics["test"] = evaluate(model, enc["test"], cfg, labels.num_labels)
    details = {"label_names": labels.names, "best_epoch": keep.best_epoch, "epochs_run": epochs_run,
               "metric": cfg.main_metric, "history": keep.history,
               "export": _save(cfg, model, labels, writer, enc.get("test")), "seconds": round(time.time() - t0, 1)}
    return Result(cfg.task, pre.ref(random_init=cfg.random_init), settings_of(cfg), metrics, details)


def _save(cfg: FinetuneConfig, model, labels, writer: ModelWriter, test) -> str:
    """OUT/hf: a ModernBertForSequenceClassification folder (FlexBERT safetensors when transformers
    cannot express the model); OUT/test_predictions.tsv for an unlabelled test file."""
    if test is not None and test.labels is None:
        preds = predictions(predict(model, test)).tolist()
        with open(os.path.join(cfg.out, "test_predictions.tsv"), "w") as f:
            f.write("index\tprediction\n")
            for i, p in enumerate(preds):
                f.write(f"{i}\t{p if labels.regression else labels.names[int(p)]}\n")
    path = writer.write_classifier(model, None if labels.regression else labels.names)
    writer.record([cfg.model], {"task": cfg.task, "train": cfg.train, "random_init": cfg.random_init})
    return path


@evaluation("classification", FinetuneConfig)
def finetune_classification(cfg: FinetuneConfig) -> Result:
    return run_finetune(cfg)


@evaluation("regression", FinetuneConfig)
def finetune_regression(cfg: FinetuneConfig) -> Result:
    return run_finetune(cfg)
