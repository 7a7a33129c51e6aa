"""Turn a validated RunConfig into a Composer Trainer (model, data, optimizer, schedule, callbacks).

``build_trainer(cfg)`` returns a ``TrainRun`` holding the trainer and the pieces tests look at;
``TrainRun.fit()`` trains.  What the run starts from (scratch, ``init_from``, a checkpoint) is
decided in ``flexbert/train/loading.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from composer import Trainer
from composer.core import Evaluator
from composer.loggers import WandBLogger
from composer.utils import reproducibility

from flexbert.config import parse_time
from flexbert.data import loader as data_loader
from flexbert.data.fingerprint import check_same
from flexbert.data.source import DataSource, resolve_source
from flexbert.env import dist_env, quiet_known_warnings
from flexbert.train import metric_keys as K
from flexbert.train import run_lock
from flexbert.train.callback_table import build_callbacks
from flexbert.train.composer_model import EVAL_METRICS, flexbert_data_spec, to_composer_time
from flexbert.train.config import RunConfig, as_plain_dict, with_data_source
from flexbert.train.loading import LoadPlan, SetupError, init_from_fingerprint, load_initial_weights, plan_load  # noqa: F401 (re-exported)
from flexbert.train.loggers import ConsoleLogger, JSONLLogger, done_line, eval_note, wandb_mode
from flexbert.train.microbatch import resolve_microbatch
from flexbert.train.optim import build_optimizer
from flexbert.train.parallelism import check_parallelism, meet
from flexbert.train.pretrained import load_teacher
from flexbert.train.recipe import build_model, resolve_device, resolve_precision, trainer_settings
from flexbert.train.run_folder import METRICS, RunFolder
from flexbert.train.run_identity import check_rerun, record_start
from flexbert.train.schedulers import parse_scheduler

log = logging.getLogger(__name__)


def build_loaders(cfg: RunConfig, source: DataSource):
    """(train loader, {evaluator label: eval loader}) from the data section: "eval" over all the
    data, plus "eval_<name>" per data.streams source (one loss per source); both label rows for
    the run's objective (MLM masks, CLM next tokens)."""
    data_cfg = cfg.data
    if cfg.callbacks.audit_doc_ids:
        data_cfg = dataclasses.replace(data_cfg, return_doc_ids=True)
    try:
        train = data_loader.build_train_loader(data_cfg, seed=cfg.seed, source=source, objective=cfg.objective,
                                               phase=parse_time(cfg.max_duration, "max_duration"))
        evaluation = {}
        if data_loader.has_eval(data_cfg):
            evaluation[K.EVAL_LABEL] = data_loader.build_eval_loader(data_cfg, source=source, objective=cfg.objective)
        for name, one in data_loader.per_source_eval_configs(data_cfg, source).items():
            evaluation[K.source_eval_label(name)] = data_loader.build_eval_loader(one, source=source, objective=cfg.objective)
    except FileNotFoundError as e:
        raise SetupError(f"data: {e}") from None
    return train, evaluation


def data_source(cfg: RunConfig) -> DataSource:
    """The data section resolved once: tokenizer, special ids, fingerprint, digest (SetupError when missing)."""
    data_cfg = cfg.data
    data_cfg.require_local()
    try:
        return resolve_source(data_cfg)
    except FileNotFoundError as e:
        raise SetupError(f"data: {e}") from None


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

    changes: Optional[dict] = None  # what this start changes in the run folder (run_identity.check_rerun)
    data: Optional[dict] = None  # the data's identity: tokenizer fingerprint, shards digest

    def fit(self) -> bool:
        """Train to max_duration; False (and nothing done, nothing written) when a resumed run is
        already complete."""
        state = self.trainer.state
        if state.max_duration is not None and state.timestamp.get(state.max_duration.unit) >= state.max_duration:
            log.info("run already complete at batch %d; nothing to do", int(state.timestamp.batch))
            return False
        if dist_env().is_main:
            record_start(RunFolder.of(self.cfg), self.cfg, self.changes, int(state.timestamp.batch), self.data)
        t0 = time.time()
        self.trainer.fit()
        if dist_env().is_main:
            saved = self.saver.saved[-1] if self.saver is not None and self.saver.saved else None
            print(done_line(state, time.time() - t0, saved, self.cfg.resolved_run_dir, self.cfg.run_name,
                            shards_of(self.cfg)), flush=True)
        return True

    def close(self) -> None:
        try:
            self.trainer.close()
        finally:
            if dist_env().is_main:
                run_lock.release(self.cfg.resolved_run_dir)


def build_loggers(cfg: RunConfig, run_dir: str) -> list:
    loggers: list = []
    if cfg.loggers.console:
        note = eval_note(cfg.eval_subset_num_batches, cfg.data.eval_split, run_dir, shards_of(cfg))
        loggers.append(ConsoleLogger(cfg.loggers.console_interval, final_note=note, done_line=False))
    if cfg.loggers.jsonl:
        loggers.append(JSONLLogger(os.path.join(run_dir, METRICS)))
    if cfg.loggers.wandb:
        mode, note = wandb_mode()
        if note and dist_env().is_main:
            print(note, flush=True)
        loggers.append(
            WandBLogger(
                project=cfg.loggers.wandb_project,
                entity=cfg.loggers.wandb_entity,
                group=cfg.loggers.wandb_group,
                tags=list(cfg.loggers.wandb_tags) or None,
                init_kwargs={"config": as_plain_dict(cfg), "dir": run_dir, "name": cfg.run_name,
                             **({"mode": mode} if mode else {})},
            )
        )
    return loggers


def shards_of(cfg: RunConfig) -> str:
    """The shard folder to name in a command (``data.local``, else the first stream's)."""
    return cfg.data.local or next((s.local or s.remote or "" for s in cfg.data.streams.values()), "") or "SHARDS"


def run_identity(cfg: RunConfig, tokenizer: Optional[str]) -> dict:
    """What every checkpoint of the run carries about it (flexbert/train/run_folder.py reads it):
    its folder, config and tokenizer fingerprint (flexbert/data/fingerprint.py)."""
    return {"run_dir": os.path.abspath(cfg.resolved_run_dir), "config": as_plain_dict(cfg), "tokenizer": tokenizer}


def tokenizer_identity(cfg: RunConfig, source: DataSource) -> Optional[str]:
    """The run's tokenizer: the shards' (every stream's, and data.tokenizer's when set, must
    agree), which ``init_from`` must share when it records one.  Raises TokenizerMismatchError."""
    fp = source.fingerprint
    if cfg.init_from and os.path.exists(cfg.init_from):
        check_same(init_from_fingerprint(cfg.init_from), f"init_from {cfg.init_from}", fp,
                   f"the shards ({cfg.data.sources()[0][0] or cfg.data.sources()[0][1]})")
    return fp


def build_trainer(cfg: RunConfig, extra_callbacks: Optional[list] = None) -> TrainRun:
    """The run, under the run folder's lock (global rank 0 holds it until ``TrainRun.close``)."""
    quiet_known_warnings()
    if dist_env().is_main:
        run_lock.acquire(cfg.resolved_run_dir, f"train.py {cfg.run_name}")
    try:
        return _build_trainer(cfg, extra_callbacks)
    except BaseException:
        if dist_env().is_main:
            run_lock.release(cfg.resolved_run_dir)
        raise


def _build_trainer(cfg: RunConfig, extra_callbacks: Optional[list]) -> TrainRun:
    device = resolve_device(cfg.device)
    meet(device, cfg.dist_timeout, cfg.dist_init_timeout, cfg.resolved_run_dir)  # every rank here, or one line
    check_parallelism(cfg.parallelism, cfg.optimizer.name, device)
    source = data_source(cfg)
    cfg = with_data_source(cfg, source)  # the model's special ids from the tokenizer (ConfigError if they disagree)
    cfg = resolve_microbatch(cfg, device)  # data.microbatch_size: auto -> a number, kept across resumes
    tokenizer = tokenizer_identity(cfg, source)
    # refuses another model, tokenizer or data here (moved data paths must hold the same tokenizer's shards)
    data = {"tokenizer": tokenizer, "shards": source.digest}
    changes = check_rerun(RunFolder.of(cfg), cfg, data) if dist_env().is_main else {}
    precision = resolve_precision(cfg.precision, device)
    plan = plan_load(cfg)

    # Seed before building the model so initial weights follow the run's seed.
    reproducibility.seed_all(cfg.seed)
    model = build_model(cfg, shard=True)  # checkpointing, compile, FSDP (flexbert/train/recipe.py)
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from)
    model.teacher = load_teacher(cfg.teacher, tokenizer, cfg.model.vocab_size)  # None without distillation
    optimizer = build_optimizer(model, cfg.optimizer, on_cuda=device == "gpu")
    scheduler = parse_scheduler(cfg.scheduler)
    train_loader, eval_loaders = build_loaders(cfg, source)
    callbacks = build_callbacks(cfg, train_loader, run_identity(cfg, tokenizer))
    evaluators = [Evaluator(label=label, dataloader=flexbert_data_spec(loader), device_eval_microbatch_size=1,
                            metric_names=list(EVAL_METRICS))
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
        callbacks=list(callbacks.values()) + list(extra_callbacks or []),
        loggers=build_loggers(cfg, cfg.resolved_run_dir),
        load_path=plan.path,
        load_weights_only=plan.weights_only,
        load_ignore_keys=plan.ignore_keys,
        load_progress_bar=False,
        dist_timeout=cfg.dist_timeout,
        parallelism_config=model.techniques.parallelism_config,
        **trainer_settings(device=device, precision=precision, seed=cfg.seed),
    )
    return TrainRun(cfg, trainer, model, optimizer, train_loader, eval_loaders.get(K.EVAL_LABEL), callbacks.get("saver"), plan,
                    callbacks, changes, data)
