"""Turn a validated RunConfig into a Composer Trainer (model, data, optimizer, schedule, callbacks).

``build_trainer(cfg)`` returns a ``TrainRun`` holding the trainer and the pieces tests look at;
``TrainRun.fit()`` trains.  What to load is decided here, not by Composer's autoresume:

1. ``autoresume`` and an intact checkpoint in ``save_folder`` -> full resume from the newest one
   (truncated / corrupt newer files are skipped with a warning);
2. else ``load_path``: ``load_weights_only`` takes just the weights; ``reset_time`` starts a new
   phase (clock, schedule, data position and RNG fresh; optimizer moments kept unless
   ``load_optimizer_state: false``); otherwise a full resume from that file.
In every case the configured optimizer hyper-parameters override the loaded ones.
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
from flexbert.train.checkpointing import AtomicCheckpointSaver, checkpoint_problem, find_resume_checkpoint
from flexbert.train.composer_model import flexbert_data_spec
from flexbert.train.config import RunConfig, as_plain_dict, tokenizer_mismatch
from flexbert.train.flops import body_flops_per_token, head_flops_per_prediction
from flexbert.train.loggers import ConsoleLogger, JSONLLogger
from flexbert.train.optim import build_optimizer
from flexbert.train.quiet import quiet_known_warnings
from flexbert.train.schedulers import build_scheduler, to_composer_time

log = logging.getLogger(__name__)


class SetupError(RuntimeError):
    """The run cannot start (missing data, unreadable checkpoint...); the message is one line."""


def resolve_device(cfg: RunConfig) -> str:
    if cfg.device == "gpu" and not torch.cuda.is_available():
        raise SetupError("device: gpu was asked for but CUDA is not available")
    if cfg.device != "auto":
        return cfg.device
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(cfg: RunConfig, device: str) -> str:
    if cfg.precision == "auto":
        return "amp_bf16" if device == "gpu" else "fp32"
    if device == "cpu" and cfg.precision != "fp32":
        raise SetupError(f"precision: {cfg.precision} is not supported on CPU (Composer trains fp32 there); use fp32 or auto")
    return cfg.precision


def build_model(cfg: RunConfig):
    from flexbert.train.composer_model import FlexBertMLM

    model_cfg = cfg.model
    if cfg.compile == "blocks" and not model_cfg.compile:
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, compile=True)
    return FlexBertMLM(model_cfg)


def load_initial_weights(model, path: str) -> None:
    """``init_from``: weights only, from an HF ModernBERT / exported FlexBERT folder, a
    ``.safetensors`` file or a ``.pt`` state dict (FlexBertForMaskedLM keys, or a Composer
    checkpoint).  Shapes must match the configured model exactly."""
    if not os.path.exists(path):
        raise SetupError(f"init_from: {path} does not exist")
    try:
        if os.path.isdir(path):
            from flexbert.convert.hf import from_hf

            state = from_hf(path).state_dict()
        elif path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if isinstance(state, dict) and "state" in state:  # a Composer checkpoint
                state = {k[len("model."):]: v for k, v in state["state"]["model"].items()}
    except SetupError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        raise SetupError(f"init_from: cannot read weights from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    target = model.model
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "decoder.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise SetupError(f"init_from: {path} does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


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


def _phase_ignore_keys(cfg: RunConfig) -> list[str]:
    keys = ["state/timestamp", "state/schedulers", "state/callbacks", "state/dataset_state", "rng"]
    if not cfg.load_optimizer_state:
        keys.append("state/optimizers")
    return keys


@dataclass
class LoadPlan:
    path: Optional[str] = None
    weights_only: bool = False
    ignore_keys: Optional[list[str]] = None
    kind: str = "scratch"  # scratch | resume | phase | weights | load


def plan_load(cfg: RunConfig) -> LoadPlan:
    folder = cfg.resolved_save_folder
    if cfg.autoresume and folder:
        found = find_resume_checkpoint(folder)
        if found:
            return LoadPlan(found, False, None, "resume")
    if cfg.load_path:
        if "://" not in cfg.load_path:
            problem = checkpoint_problem(cfg.load_path)
            if problem is not None:
                raise SetupError(f"load_path: cannot read checkpoint {cfg.load_path}: {problem}")
        if cfg.load_weights_only:
            return LoadPlan(cfg.load_path, True, None, "weights")
        if cfg.reset_time:
            return LoadPlan(cfg.load_path, False, _phase_ignore_keys(cfg), "phase")
        return LoadPlan(cfg.load_path, False, None, "load")
    return LoadPlan()


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
    if cfg.callbacks.audit_doc_ids:
        callbacks["audit"] = cb.DocAudit(os.path.join(cfg.resolved_run_dir, "doc_ids"))
        ordered.append(callbacks["audit"])
    if cfg.data.streams or cfg.data.epochs:  # data/tokens/<source>; stop after data.epochs
        ordered.append(callbacks.setdefault("data", cb.DataProgress(train_loader)))
    return callbacks, ordered + list(extra or []), saver


def build_trainer(cfg: RunConfig, extra_callbacks: Optional[list] = None) -> TrainRun:
    quiet_known_warnings()
    write_config(cfg)
    device = resolve_device(cfg)
    precision = resolve_precision(cfg, device)
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
        step_schedulers_every_batch=False,  # ScheduleStepper steps at BATCH_START instead
        spin_dataloaders=False,  # the loader restores its own position: never replay batches
        device=device,
        precision=precision,
        device_train_microbatch_size=1,  # one packed row per microbatch (rows are fixed-size)
        seed=cfg.seed,
        callbacks=ordered,
        loggers=build_loggers(cfg, cfg.resolved_run_dir),
        progress_bar=False,
        log_to_console=False,
        load_path=plan.path,
        load_weights_only=plan.weights_only,
        load_ignore_keys=plan.ignore_keys,
        load_progress_bar=False,
        dist_timeout=cfg.dist_timeout,
        compile_config={} if cfg.compile == "model" else None,
    )
    return TrainRun(cfg, trainer, model, optimizer, train_loader, eval_loaders.get("eval"), saver, plan, callbacks)
