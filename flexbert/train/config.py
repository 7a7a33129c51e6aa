"""The run config: every option of a training run as typed dataclasses (defaults live here).

``load_run_config("configs/tiny.yaml", ["optimizer.lr=1e-3"])`` merges YAML and ``key=value``
overrides (OmegaConf) and validates the result: unknown keys fail with a did-you-mean, wrong types
and impossible values with one line naming the key.  The ``model`` section is
``flexbert.config.FlexBertConfig``; the ``data`` section is ``flexbert.data.config.DataConfig``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf

from flexbert.config import from_dict, load_yaml, parse_time, to_dict
from flexbert.data.config import DataConfig
from flexbert.data.mask_schedule import MaskScheduleError
from flexbert.data.masking import OBJECTIVES
from flexbert.data.remote import is_remote
from flexbert.data.source import DataSource, resolve_source
from flexbert.errors import FlexBertError
from flexbert.model.compile import TORCH_COMPILE_MODES
from flexbert.model.config import FlexBertConfig, with_tokenizer_ids
from flexbert.model.model import checkpointed_layers
from flexbert.registry import ConfigError, unknown_choice
from flexbert.train.optim import OptimizerConfig
from flexbert.train.schedulers import parse_scheduler

class SetupError(FlexBertError, RuntimeError):
    """The run cannot start (missing data, unreadable checkpoint...); the message is one line."""


PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")
DEVICES = ("auto", "cpu", "gpu")
COMPILE = ("none", "model", "blocks")


PARALLELISMS = ("ddp", "fsdp")  # flexbert/train/parallelism.py
SHARDINGS = ("full", "hybrid")
FSDP_PRECISIONS = ("DEFAULT", "PURE", "FULL")


@dataclass
class FsdpConfig:
    sharding: str = "full"  # full | hybrid (shard within a node, replicate across nodes)
    mixed_precision: str = "DEFAULT"  # DEFAULT | PURE | FULL (Composer's FSDP mixed-precision modes)
    reshard_after_forward: bool = True  # free gathered block weights after forward

    def validate(self, prefix: str = "fsdp") -> None:
        for key, choices in (("sharding", SHARDINGS), ("mixed_precision", FSDP_PRECISIONS)):
            if getattr(self, key) not in choices:
                raise ConfigError(unknown_choice(f"{prefix}.{key}", "value", getattr(self, key), choices))


@dataclass
class ProfilerConfig:
    start_batch: int = 0  # 0: off
    batches: int = 3
    out: Optional[str] = None  # default: {run_dir}/profile

    def validate(self, prefix: str = "profiler") -> None:
        if self.start_batch < 0 or self.batches < 1:
            raise ConfigError(f"{prefix}: start_batch must be >= 0 (0: off) and batches >= 1, got "
                              f"{self.start_batch}, {self.batches}")


@dataclass
class LoggersConfig:
    console: bool = True  # one line per console_interval batches, plus eval lines
    console_interval: int = 10  # batches
    jsonl: bool = True  # {run_dir}/metrics.jsonl: one record per batch (what sweeps read)
    wandb: bool = False  # online when logged in (or WANDB_MODE=online), else offline with a note
    wandb_project: str = "flexbert"
    wandb_entity: Optional[str] = None
    wandb_group: Optional[str] = None  # runs of one sweep or phase chain (set by them)
    wandb_tags: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "loggers") -> None:
        if self.console_interval < 1:
            raise ConfigError(f"{prefix}.console_interval: must be >= 1, got {self.console_interval}")


@dataclass
class CallbacksConfig:
    lr_monitor: bool = True
    packing_efficiency: bool = True
    throughput: bool = True
    throughput_window: int = 10  # batches averaged for tokens/s and MFU
    peak_flops: Optional[float] = None  # per device, for MFU; default: a table of known GPUs
    nan_guard: bool = True  # stop on a non-finite loss (keeps the last good checkpoint)
    max_loss: Optional[float] = None  # also stop when the train loss exceeds this
    memory: bool = True  # GPU memory (CUDA only)
    audit_doc_ids: bool = False  # write the document ids each rank trained on to {run_dir}/doc_ids/
    # on these signals: finish the batch, save a checkpoint, exit 143 (130 for SIGINT, Ctrl-C);
    # a second signal exits at once; []: Composer's immediate exit
    graceful_stop: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1", "SIGINT"])

    def validate(self, prefix: str = "callbacks") -> None:
        if self.throughput_window < 1:
            raise ConfigError(f"{prefix}.throughput_window: must be >= 1")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"{prefix}.peak_flops: must be > 0")
        known = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP")
        for name in self.graceful_stop:
            if name not in known:
                raise ConfigError(unknown_choice(f"{prefix}.graceful_stop", "signal", name, known))


@dataclass
class TeacherConfig:
    """Distillation (flexbert/train/pretrained.py): the loss is ``(1 - weight) * CE + weight * T^2 *
    KL(teacher || student)`` at the predicted positions, both distributions at temperature T."""

    model: str = ""  # a run folder, a checkpoint or a Hugging Face folder, of the run's tokenizer
    temperature: float = 1.0
    weight: float = 0.5  # of the KL term; 1 - weight of the hard-label cross-entropy

    def validate(self, prefix: str = "teacher") -> None:
        if not self.model:
            raise ConfigError(f"{prefix}.model: required (a run folder, checkpoint or Hugging Face folder)")
        if not self.temperature > 0:
            raise ConfigError(f"{prefix}.temperature: must be > 0, got {self.temperature}")
        if not 0 < self.weight <= 1:
            raise ConfigError(f"{prefix}.weight: must be in (0, 1], got {self.weight}")


@dataclass
class RunConfig:
    run_name: str = "flexbert"
    run_dir: Optional[str] = None  # default: runs/{run_name}
    seed: int = 17

    model: FlexBertConfig = field(default_factory=FlexBertConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: dict = field(default_factory=lambda: {"name": "constant_with_warmup"})
    objective: str = "mlm"  # mlm | clm (causal attention, next-token labels; docs/training.md)
    teacher: Optional[TeacherConfig] = None  # distillation from a trained model (docs/training.md)

    max_duration: str = "1000ba"  # tok | ba | ep, e.g. 1719Btok
    eval_interval: str = "500ba"  # also evaluated at the end of training
    eval_subset_num_batches: int = -1  # -1: the whole eval set

    # checkpoints
    save_folder: Optional[str] = None  # default: {run_dir}/checkpoints; "" disables saving; s3://...: uploaded there
    save_interval: str = "1000ba"
    save_num_to_keep: int = 3  # newest kept; -1 keeps all
    autoresume: bool = True  # resume from the newest intact checkpoint in save_folder
    init_from: Optional[str] = None  # initial weights only: HF/FlexBERT folder, .safetensors or .pt state dict
    load_path: Optional[str] = None  # a Composer checkpoint (phase change, init from another run)
    load_weights_only: bool = False
    load_optimizer_state: bool = True  # with load_path: keep the optimizer moments
    reset_time: bool = False  # with load_path: start the clock (and schedule, data) from zero

    precision: str = "auto"  # auto: amp_bf16 on GPU, fp32 on CPU
    device: str = "auto"  # auto | cpu | gpu
    compile: str = "none"  # none | model | blocks
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    activation_checkpointing: str = "none"  # none | all | every_N: blocks recomputed in backward (less memory)
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)  # a torch profiler trace of chosen batches
    dist_timeout: float = 300.0  # seconds every collective may wait (a checkpoint written while the others wait)
    dist_init_timeout: float = 120.0  # seconds the ranks have to meet at start (flexbert/train/parallelism.py)
    parallelism: str = "ddp"  # ddp | fsdp (sharded parameters, gradients, optimizer state: flexbert/train/parallelism.py)
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)  # with parallelism: fsdp

    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)

    def validate(self, prefix: str = "") -> None:
        for key, choices in (("objective", OBJECTIVES), ("precision", PRECISIONS), ("device", DEVICES), ("compile", COMPILE),
                             ("compile_mode", TORCH_COMPILE_MODES), ("parallelism", PARALLELISMS)):
            value = getattr(self, key)
            if value not in choices:
                raise ConfigError(unknown_choice(key, "value", value, choices))
        try:
            checkpointed_layers(self.activation_checkpointing, self.model.num_hidden_layers)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        phase = parse_time(self.max_duration, "max_duration")
        if phase[1] == "dur":
            raise ConfigError("max_duration: must be in tok, ba, sp or ep, not a fraction")
        try:
            self.data.mask_schedule.for_phase(phase)  # a masking schedule over the phase needs it in tok or ba
        except MaskScheduleError as e:
            raise ConfigError(str(e)) from None
        for key in ("max_duration", "eval_interval", "save_interval"):
            if parse_time(getattr(self, key), key)[0] <= 0:
                raise ConfigError(f"{key}: must be more than zero, got {getattr(self, key)!r}")
        if not (self.dist_timeout > 0 and self.dist_init_timeout > 0):
            raise ConfigError(f"dist_timeout, dist_init_timeout: seconds > 0, got {self.dist_timeout}, {self.dist_init_timeout}")
        if self.save_num_to_keep == 0 or self.save_num_to_keep < -1:
            raise ConfigError(f"save_num_to_keep: must be >= 1 or -1 (keep all), got {self.save_num_to_keep}")
        if not self.run_name or "/" in self.run_name:
            raise ConfigError(f"run_name: must be a non-empty name without '/', got {self.run_name!r}")
        if not self.load_path:
            for key in ("reset_time", "load_weights_only"):
                if getattr(self, key):
                    raise ConfigError(f"{key}: only applies with load_path (set load_path to the checkpoint to start from)")
        elif self.init_from:
            raise ConfigError("init_from and load_path both give initial weights: set only one")
        parse_scheduler(self.scheduler)  # the name against the registry, the arguments against its dataclass

    # ----------------------------------------------------------------- derived values
    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or os.path.join("runs", self.run_name)

    @property
    def causal(self) -> bool:
        """The model runs with causal attention (``objective: clm``)."""
        return self.objective == "clm"

    def max_predicted_fraction(self, evaluation: bool = False) -> float:
        """The highest share of a row's tokens the head predicts in training (and ``evaluation``):
        every token under CLM, else the masking rate (what static shapes and memory must hold)."""
        if self.causal:
            return 1.0
        return max(self.data.max_mlm_probability, self.data.eval_mlm_probability if evaluation else 0.0)

    @property
    def resolved_save_folder(self) -> Optional[str]:
        """The local checkpoint folder (None: saving is off); with an object-store save_folder, the
        local copies ``{run_dir}/checkpoints`` that are uploaded there."""
        if self.save_folder == "":
            return None
        if is_remote(self.save_folder):
            return os.path.join(self.resolved_run_dir, "checkpoints")
        return self.save_folder or os.path.join(self.resolved_run_dir, "checkpoints")

    @property
    def remote_save_folder(self) -> Optional[str]:
        """An object-store ``save_folder`` (s3://...): every checkpoint is uploaded there, and a run
        without local checkpoints resumes from the newest one there."""
        return self.save_folder if is_remote(self.save_folder) else None


def _load_with_inherit(path: str, seen: tuple[str, ...] = ()) -> dict:
    """A YAML file as a dict; ``inherit: other.yaml`` (relative to the file) is loaded first and
    this file's keys are merged over it (mappings merge, everything else replaces)."""
    real = os.path.realpath(path)
    if real in seen:
        raise ConfigError(f"inherit: {path} inherits from itself")
    raw = load_yaml(path)
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"inherit: expected a YAML file name in {path}, got {parent!r}")
    parent_path = parent if os.path.isabs(parent) else os.path.join(os.path.dirname(path), parent)
    if not os.path.exists(parent_path):
        raise ConfigError(f"inherit: {path} inherits from {parent_path}, which does not exist")
    base = _load_with_inherit(parent_path, seen + (real,))
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(raw)), resolve=True)


def load_run_config(path: Optional[str], overrides: Optional[list[str]] = None, where: str = "") -> RunConfig:
    """YAML (with optional ``inherit:``) + ``key=value`` overrides -> a validated RunConfig (a bad
    value's message starts with ``where``: the file, when it is a saved one)."""
    raw: dict[str, Any] = _load_with_inherit(path) if path else {}
    if overrides:
        with_cli = load_yaml(None, overrides)
        raw = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(with_cli)), resolve=True)
    return config_from_dict(raw, where)


def config_from_dict(raw: dict, where: str = "") -> RunConfig:
    """A validated RunConfig from a plain mapping (a config.yaml's or a checkpoint's).  Plain data:
    no file is read; the model's special ids come from the tokenizer when the data section is
    resolved (``with_data_source``)."""
    try:
        return from_dict(RunConfig, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def with_data_source(cfg: RunConfig, source: DataSource) -> RunConfig:
    """``cfg`` with the model ids it leaves at their defaults taken from the data's tokenizer;
    ConfigError when a set id (or the vocabulary size) disagrees with it."""
    return dataclasses.replace(cfg, model=with_tokenizer_ids(cfg.model, source.special, source.tokenizer_dir))


def with_known_data(cfg: RunConfig) -> RunConfig:
    """``with_data_source`` when the data section's tokenizer can be found, else ``cfg`` as it is
    (a config read to size a model, print or tile, whose shards may not exist here)."""
    try:
        source = resolve_source(cfg.data)
    except FileNotFoundError:
        return cfg
    return with_data_source(cfg, source)


def as_plain_dict(cfg: RunConfig) -> dict:
    return to_dict(cfg)
