"""Optimizers: torch-optimi's StableAdamW (the paper's) and AdamW, with clean parameter groups.

* Fully decoupled weight decay (``decouple_lr=True``): each step shrinks weights by
  ``weight_decay * lr / max_lr``, so the decay strength follows the schedule but not the peak LR's
  magnitude.  ``max_lr`` defaults to the configured (peak) ``lr``.
* No weight decay on biases and normalisation weights (including the embedding norm): every
  parameter with fewer than two dimensions, or whose owning module is a norm, goes in group 1.
* torch-optimi picks its Triton kernel whenever Triton imports; on a CPU-only machine that dies at
  the first step ("0 active drivers"), so Triton is enabled only when training on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import optimi
import torch

from flexbert.registry import ConfigError, unknown_choice

OPTIMIZERS = ("stable_adamw", "adamw")


@dataclass
class OptimizerConfig:
    name: str = "stable_adamw"  # stable_adamw | adamw
    lr: float = 8e-4  # peak LR (paper base: 8e-4, large: 5e-4)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 1e-5
    decouple_lr: bool = True  # fully decoupled weight decay
    max_lr: Optional[float] = None  # LR at which weight_decay is applied in full; default: lr
    kahan_sum: Optional[bool] = None  # optimi default: on for bf16/fp16 parameters
    no_decay_bias_norm: bool = True

    def validate(self, prefix: str = "optimizer") -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(unknown_choice(f"{prefix}.name", "optimizer", self.name, OPTIMIZERS))
        if self.lr < 0:
            raise ConfigError(f"{prefix}.lr: must be >= 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{prefix}.betas: expected two values in [0, 1), got {list(self.betas)}")
        if self.eps < 0 or self.weight_decay < 0:
            raise ConfigError(f"{prefix}: eps and weight_decay must be >= 0")
        if self.max_lr is not None and self.max_lr <= 0:
            raise ConfigError(f"{prefix}.max_lr: must be > 0, got {self.max_lr}")

    @property
    def effective_max_lr(self) -> float:
        return self.max_lr if self.max_lr is not None else self.lr


_NORM_TYPES = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm1d)


def _is_norm_module(module: torch.nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_bias_norm: bool = True) -> list[dict]:
    """Split parameters into a decayed group and a no-decay group (biases and norms)."""
    if not no_decay_bias_norm:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    no_decay: set[int] = set()
    for module in model.modules():
        is_norm = _is_norm_module(module)
        for name, p in module.named_parameters(recurse=False):
            if is_norm or p.ndim < 2 or name.endswith("bias"):
                no_decay.add(id(p))
    decay, plain, seen = [], [], set()
    for p in model.parameters():  # parameters() de-duplicates tied weights
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (plain if id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, on_cuda: bool = False) -> torch.optim.Optimizer:
    """Build the configured optimizer for ``model``; ``on_cuda``: where the parameters will train."""
    cls = {"stable_adamw": optimi.StableAdamW, "adamw": optimi.AdamW}[cfg.name]
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_bias_norm)
    return cls(
        groups,
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        decouple_lr=cfg.decouple_lr,
        max_lr=cfg.effective_max_lr if cfg.decouple_lr else None,
        kahan_sum=cfg.kahan_sum,
        foreach=False,
        triton=None if on_cuda else False,
    )


def override_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, schedulers=()) -> None:
    """Make the optimizer's hyper-parameters the configured ones after a checkpoint load.

    ``Optimizer.load_state_dict`` brings back the saved groups' ``lr``, ``initial_lr``,
    ``weight_decay``, ``max_lr``...; for a phase change (new LR / weight decay) the config must win.
    The group structure (decay / no-decay) is the same as at build time, so group 0's decay is the
    configured one and the no-decay group's stays 0.
    """
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = cfg.lr
        if "beta1" in group:  # optimi's names (it has no "betas": a key set here would be ignored)
            group["beta1"], group["beta2"] = cfg.betas
            group.pop("betas", None)  # written by earlier versions of this function
        else:
            group["betas"] = tuple(cfg.betas)
        group["eps"] = cfg.eps
        group["weight_decay"] = cfg.weight_decay if i == 0 else 0.0  # groups: [decay, no-decay]
        if "max_lr" in group or cfg.decouple_lr:
            group["decouple_lr"] = cfg.decouple_lr
            group["max_lr"] = cfg.effective_max_lr if cfg.decouple_lr else None
    for sched in schedulers:
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = [cfg.lr for _ in optimizer.param_groups]
        lambdas = getattr(sched, "lr_lambdas", None)
        if lambdas:
            for group, fn in zip(optimizer.param_groups, lambdas):
                group["lr"] = cfg.lr * fn(0)
