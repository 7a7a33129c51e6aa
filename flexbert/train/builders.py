"""Turn a validated RunConfig into a Composer Trainer (model, data, optimizer, schedule, callbacks).

``build_trainer(cfg)`` returns a ``TrainRun`` holding the trainer and the pieces tests look at;
``TrainRun.fit()`` trains.  What the run starts from (scratch, ``init_from``, a checkpoint) is
decided in ``flexbert/train/loading.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import yaml
from composer import Trainer
from composer.core import Evaluator
from composer.utils import reproducibility

from flexbert.data import loader as data_loader
from flexbert.train import callbacks as cb
from flexbert.train.checkpointing import AtomicCheckpointSaver
from flexbert.train.composer_model import flexbert_data_spec
from flexbert.train.config import RunConfig, as_plain_dict, tokenizer_mismatch
from flexbert.train.flops import body_flops_per_token, head_flops_per_prediction
from flexbert.train.loading import LoadPlan, SetupError, load_initial_weights, plan_load  # noqa: F401 (re-exported)
from flexbert.train.loggers import ConsoleLogger, JSONLLogger
from flexbert.train.microbatch import resolve_microbatch
from flexbert.train.optim import build_optimizer
from flexbert.train.preemption import GracefulStop
from flexbert.train.quiet import quiet_known_warnings
from flexbert.train.recipe import build_model, resolve_device, resolve_precision, trainer_settings
from flexbert.train.schedulers import build_scheduler, to_composer_time

log = logging.getLogger(__name__)


def build_loaders(cfg: RunConfig):
    """(train loader, {evaluator label: eval loader}) from the data section: "eval" over all the
    data, plus "eval_<name>" per data.streams source (one loss per source)."""
    data_cfg = cfg.data
    if cfg.callbacks.audit_doc_ids:
        data_cfg = dataclasses.replace(data_cfg, return_doc_ids=True)
    if not data_cfg.streams and not data_cfg.remote and not os.path.isdir(data_cfg.local):
        raise SetupError(f"data.local: folder {data_cfg.local} does not exist (write shards with data_prep/tokenize_to_mds.py)")
    try:
        train = data_loader.build_train_loader(data_cfg, seed=cfg.seed)
        evaluation = {"eval": data_loader.build_eval_loader(data_cfg)} if data_loader.has_eval(data_cfg) else {}
        for name, one in data_loader.per_source_eval_configs(data_cfg).items():
            evaluation[f"eval_{name}"] = data_loader.build_eval_loader(one)
    except FileNotFoundError as e:
        raise SetupError(f"data: {e}") from None
    problem = tokenizer_mismatch(cfg.model, train.special, data_cfg.tokenizer_dir())
    if problem:
        raise SetupError(problem)
    return train, evaluation


@dataclass
class TrainRun:
    cfg: RunConfig
    trainer: Any
    model: Any
    optimizer: Any
    train_loader: Any
    eval_loader: Any
    saver: Any
    plan: LoadPlan
    callbacks: dict = field(default_factory=dict)

    def fit(self) -> bool:
        """Train to max_duration; False (and nothing done) when a resumed run is already complete."""
        state = self.trainer.state
        if state.max_duration is not None and state.timestamp.get(state.max_duration.unit) >= state.max_duration:
            log.info("run already complete at batch %d; nothing to do", int(state.timestamp.batch))
            return False
        self.trainer.fit()
        return True

    def close(self) -> None:
        self.trainer.close()


def write_config(cfg: RunConfig) -> None:
    """Save the resolved config as {run_dir}/config.yaml (rank 0): what ran, and what export reads."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    os.makedirs(cfg.resolved_run_dir, exist_ok=True)
    tmp = os.path.join(cfg.resolved_run_dir, ".config.yaml.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(as_plain_dict(cfg), f, sort_keys=False)
    os.replace(tmp, os.path.join(cfg.resolved_run_dir, "config.yaml"))


def build_loggers(cfg: RunConfig, run_dir: str) -> list:
    loggers: list = []
    if cfg.loggers.console:
        loggers.append(ConsoleLogger(cfg.loggers.console_interval))
    if cfg.loggers.jsonl:
        loggers.append(JSONLLogger(os.path.join(run_dir, "metrics.jsonl")))
    if cfg.loggers.wandb:
        from composer.loggers import WandBLogger  # only when asked for: imports wandb

        loggers.append(
            WandBLogger(
                project=cfg.loggers.wandb_project,
                entity=cfg.loggers.wandb_entity,
                tags=list(cfg.loggers.wandb_tags) or None,
                init_kwargs={"config": as_plain_dict(cfg), "dir": run_dir, "name": cfg.run_name},
            )
        )
    return loggers


def build_callbacks(cfg: RunConfig, train_loader, extra: Optional[list] = None) -> tuple[dict, list, Any]:
    """(callbacks by name, callbacks in event order, checkpoint saver or None)."""
    callbacks: dict[str, Any] = {
        "schedule": cb.ScheduleStepper(),
        "resume": cb.ExactResume(train_loader),
        "phase": cb.PhaseOverride(cfg.optimizer),
    }
    saver = None
    if cfg.resolved_save_folder:
        saver = AtomicCheckpointSaver(cfg.resolved_save_folder, to_composer_time(cfg.save_interval, "save_interval"),
                                      cfg.save_num_to_keep)
        callbacks["saver"] = saver
    callbacks["metrics"] = cb.RunMetrics(
        lr=cfg.callbacks.lr_monitor,
        packing=cfg.callbacks.packing_efficiency,
        throughput=cfg.callbacks.throughput,
        window=cfg.callbacks.throughput_window,
        flops_per_token_body=body_flops_per_token(cfg.model, cfg.data.max_seq_len),
        flops_per_prediction=head_flops_per_prediction(cfg.model),
        sparse_head=cfg.model.sparse_prediction,
        peak_flops=cfg.callbacks.peak_flops,
        memory=cfg.callbacks.memory,
    )
    if cfg.callbacks.nan_guard:
        # before the saver in event order: a diverged step must never be checkpointed
        callbacks["nan_guard"] = cb.NaNGuard(cfg.callbacks.max_loss, saver)
    ordered = [callbacks[k] for k in ("schedule", "resume", "phase", "nan_guard", "metrics") if k in callbacks]
    if saver is not None:
        ordered.append(saver)
    if cfg.callbacks.graceful_stop:  # after the saver: a batch saved on schedule is not saved twice
        callbacks["graceful_stop"] = GracefulStop(saver, tuple(cfg.callbacks.graceful_stop))
        ordered.append(callbacks["graceful_stop"])
    if cfg.callbacks.audit_doc_ids:
        callbacks["audit"] = cb.DocAudit(os.path.join(cfg.resolved_run_dir, "doc_ids"))
        ordered.append(callbacks["audit"])
    if cfg.data.streams or cfg.data.epochs:  # data/tokens/<source>; stop after data.epochs
        ordered.append(callbacks.setdefault("data", cb.DataProgress(train_loader)))
    return callbacks, ordered + list(extra or []), saver


def build_trainer(cfg: RunConfig, extra_callbacks: Optional[list] = None) -> TrainRun:
    quiet_known_warnings()
    write_config(cfg)
    device = resolve_device(cfg.device)
    cfg = resolve_microbatch(cfg, device)  # data.microbatch_size: auto -> a number, kept across resumes
    precision = resolve_precision(cfg.precision, device)
    plan = plan_load(cfg)

    # Seed before building the model so initial weights follow the run's seed.
    reproducibility.seed_all(cfg.seed)
    model = build_model(cfg)
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from)
    optimizer = build_optimizer(model, cfg.optimizer, on_cuda=device == "gpu")
    scheduler = build_scheduler(cfg.scheduler)
    train_loader, eval_loaders = build_loaders(cfg)
    callbacks, ordered, saver = build_callbacks(cfg, train_loader, extra_callbacks)
    evaluators = [Evaluator(label=label, dataloader=flexbert_data_spec(loader), device_eval_microbatch_size=1,
                            metric_names=["MLMLoss", "MLMAccuracy", "MLMPerplexity"])
                  for label, loader in eval_loaders.items()] or None

    trainer = Trainer(
        model=model,
        run_name=cfg.run_name,
        train_dataloader=flexbert_data_spec(train_loader),
        eval_dataloader=evaluators,
        eval_interval=to_composer_time(cfg.eval_interval, "eval_interval"),
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=to_composer_time(cfg.max_duration, "max_duration"),
        optimizers=optimizer,
        schedulers=scheduler,
        spin_dataloaders=False,  # the loader restores its own position: never replay batches
        device_train_microbatch_size=1,  # one packed row per microbatch (rows are fixed-size)
        callbacks=ordered,
        loggers=build_loggers(cfg, cfg.resolved_run_dir),
        load_path=plan.path,
        load_weights_only=plan.weights_only,
        load_ignore_keys=plan.ignore_keys,
        load_progress_bar=False,
        dist_timeout=cfg.dist_timeout,
        **trainer_settings(device=device, precision=precision, seed=cfg.seed),
    )
    return TrainRun(cfg, trainer, model, optimizer, train_loader, eval_loaders.get("eval"), saver, plan, callbacks)
