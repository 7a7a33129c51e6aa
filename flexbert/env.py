"""The process environment: the distributed ranks a launcher set, and the third-party defaults.

``dist_env()`` is the one reader of ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``LOCAL_WORLD_SIZE`` / ``NODE_RANK`` (set by ``composer -n N``, torchrun or a cluster's launcher;
a plain ``python`` process is rank 0 of 1).  ``quiet_third_party()`` applies FlexBERT's defaults
for its dependencies (tokenizers without fork warnings; wandb's mode is decided where the run's
logger is built, flexbert/train/loggers.py ``wandb_mode``) and
the one filter for their known, harmless notices; FlexBERT's own warnings stay visible.  Child
processes get the same defaults (``flexbert/experiments/launcher.py`` ``child_env``).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

# Environment defaults for FlexBERT processes and their children (a value already set wins).
# TORCH_WARM_POOL=0: importing torch._inductor.async_compile (Composer's imports do) otherwise starts
# Inductor's compile-worker pool at once, a process that imports torch and Inductor again (~12 s of
# CPU on a 2-core machine) in every process and every rank, compile or not; with 0 a run that
# compiles starts the pool at its first compile instead.
THIRD_PARTY_DEFAULTS = {"TOKENIZERS_PARALLELISM": "false", "TORCH_WARM_POOL": "0"}

KNOWN_NOTICES = (
    # ScheduleStepper steps at BATCH_START, before the first optimizer.step(): intended.
    r"Detected call of `lr_scheduler.step\(\)` before",
    # ExactResume / PhaseOverride restore their own state; Composer need not.
    r".*is not in the state_dict. Its state will not be restored.*",
    r".*torch.cuda.amp.*",
    r".*Cannot split.*",
    r".*The `compile_config` argument.*",
    r".*No batches were trained.*",
    r".*TypedStorage is deprecated.*",
    r".*Setting torch.backends.*",
    r".*device_train_microbatch_size.*",
    r".*sampler.*",
)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: Optional[int] = None  # ranks on this node; None: LOCAL_WORLD_SIZE unset
    node_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def ranks_per_node(self, world_size: Optional[int] = None) -> int:
        """LOCAL_WORLD_SIZE, else all of ``world_size`` (default: this world's) on one node."""
        return self.local_world_size or world_size or self.world_size


def dist_env(environ: Optional[Mapping[str, str]] = None) -> DistEnv:
    """The ranks of this process (``environ`` defaults to ``os.environ``)."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_WORLD_SIZE")
    return DistEnv(rank=int(env.get("RANK") or 0), world_size=int(env.get("WORLD_SIZE") or 1),
                   local_rank=int(env.get("LOCAL_RANK") or 0), local_world_size=int(local) if local else None,
                   node_rank=int(env.get("NODE_RANK") or 0))


def quiet_known_warnings() -> None:
    logging.getLogger("composer").setLevel(logging.WARNING)
    logging.getLogger("streaming").setLevel(logging.ERROR)
    for pattern in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=pattern)


def quiet_third_party() -> None:
    """FlexBERT's environment defaults (unless set) and the filter for known notices."""
    for key, value in THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_known_warnings()
