"""Data parallelism: ``parallelism: ddp`` (every rank holds the whole model) or ``fsdp`` (sharded).

``fsdp`` is torch's FSDP2 (``fully_shard``, parameters as DTensors) applied by Composer: each
transformer block is one unit (``FlexBertForMaskedLM.fsdp_wrap_fn``), and the rest (embeddings,
tied decoder, head, final norm) is the root unit.  Every rank keeps 1/world of the parameters,
gradients and StableAdamW's moments and gathers a block's weights just before using it.

* ``fsdp.sharding: full`` shards over all ranks; ``hybrid`` shards within a node and replicates
  across nodes (a 2-D mesh, nodes x ranks per node): all-gathers stay on the fast intra-node links.
* ``fsdp.mixed_precision``: Composer's ``DEFAULT`` (parameters all-gathered and gradients reduced
  in the autocast dtype, bf16 on GPU), ``PURE`` (also the whole forward in it) or ``FULL`` (fp32
  everywhere; what fp32 CPU runs use either way).
* ``fsdp.reshard_after_forward``: free a block's gathered weights after its forward (less memory,
  one more all-gather in backward).

Checkpoints stay single files with the full state (gathered to rank 0, written by the atomic
saver), so autoresume, averaging, export and a later DDP run read them unchanged, and a run may
move between ``ddp`` and ``fsdp`` at a checkpoint.  Composer's FSDP1 path cannot run without CUDA
(it asks for ``torch.cuda.current_device()``); FSDP2 runs under gloo on CPU, which is what the
tests use (tests/test_fsdp.py), except with StableAdamW: its per-tensor RMS is a mean over a
sharded tensor, an AVG all-reduce that gloo lacks (``check_parallelism`` says so up front).

Meeting the other ranks: within ``dist_init_timeout`` seconds, or one line saying what happened.

A multi-process run's ranks meet twice before anything else: the process group's rendezvous at
``MASTER_ADDR:MASTER_PORT`` and a first barrier.  Left to Composer, both wait ``dist_timeout``
(300 s by default, the bound every later collective needs: a checkpoint written on rank 0 while the
others wait) and a rank that died before it, or was never started, leaves the others silent for
that long.  ``meet`` initialises the process group itself (Composer's Trainer reuses it) under a
watchdog: past ``dist_init_timeout`` a rank prints one line - which rendezvous, how many ranks it
waited for, the likely causes, and under torchrun on CPU to use ``composer -n N train.py`` - gives
back the run folder's lock and exits with code 2; its launcher then stops the other local ranks.
A rendezvous port already taken (two launchers on one node with one port) is one line too.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import Optional

from composer.devices import DeviceCPU, DeviceGPU
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed import DistNetworkError
from torch.distributed.device_mesh import init_device_mesh

from flexbert.env import DistEnv, dist_env
from flexbert.errors import FlexBertError
from flexbert.registry import ConfigError
from flexbert.train import run_lock
from flexbert.train.config import FsdpConfig


def check_parallelism(parallelism: str, optimizer: str, device: str) -> None:
    """StableAdamW's per-tensor RMS is a mean over a sharded tensor: an AVG all-reduce, which NCCL
    has and gloo (CPU) does not.  Say so before any rank starts instead of failing in step 1."""
    if parallelism == "fsdp" and optimizer == "stable_adamw" and device != "gpu":
        raise ConfigError("parallelism: fsdp with optimizer.name=stable_adamw needs GPUs (NCCL): its per-tensor "
                          "RMS is a mean over sharded tensors, an AVG all-reduce that gloo lacks; on CPU use "
                          "optimizer.name=adamw or parallelism=ddp")


def composer_parallelism(parallelism: str, fsdp: FsdpConfig, device: str) -> Optional[dict]:
    """The Trainer's ``parallelism_config`` (None for DDP, Composer's default)."""
    if parallelism == "ddp":
        return None
    mesh = hybrid_mesh(device) if fsdp.sharding == "hybrid" else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FSDP2 Config/APIs are experimental")
        config = FSDP2Config(device_mesh=mesh, reshard_after_forward=fsdp.reshard_after_forward,
                             mixed_precision=fsdp.mixed_precision, state_dict_type="full")
    return {"fsdp": config}


def hybrid_mesh(device: str):
    """(nodes, ranks per node) mesh: replicate over the first dimension, shard over the second."""
    dist.initialize_dist(DeviceGPU() if device == "gpu" else DeviceCPU())  # the Trainer reuses it
    world, local = dist.get_world_size(), dist.get_local_world_size()
    if world % local:
        raise ValueError(f"fsdp.sharding: hybrid needs the same number of ranks on every node ({world} ranks, "
                         f"{local} on this node)")
    return init_device_mesh("cuda" if device == "gpu" else "cpu", (world // local, local),
                            mesh_dim_names=("dp_replicate", "dp_shard"))


EXIT_CODE = 2


class RendezvousError(FlexBertError, RuntimeError):
    """The ranks cannot meet (one line)."""


def _where() -> str:
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def timeout_message(env: DistEnv, seconds: float) -> str:
    """What a rank that waited ``seconds`` for the others says."""
    line = (f"the {env.world_size} ranks did not all meet within {seconds:g} s (rendezvous at {_where()}, this is rank "
            f"{env.rank} on node {env.node_rank}): a rank died before it or was never started (see the other "
            "ranks' and nodes' logs), or another run's launcher holds this port; dist_init_timeout waits longer")
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun
        line += f"; on CPU launch with `composer -n {env.ranks_per_node()} train.py ...` instead of torchrun"
    return line


def _give_up(env: DistEnv, seconds: float, run_dir: str) -> None:
    prefix = f"[rank {env.rank}] " if env.world_size > 1 else ""
    print(f"{prefix}error: {timeout_message(env, seconds)}", file=sys.stderr, flush=True)
    if env.is_main:
        run_lock.release(run_dir)
    os._exit(EXIT_CODE)  # the main thread is blocked inside the rendezvous: nothing else can end it


def meet(device: str, dist_timeout: float, init_timeout: float, run_dir: str) -> None:
    """Initialise the process group (``dist_timeout`` for every later collective) and pass a first
    barrier within ``init_timeout`` seconds; a single process does nothing."""
    env = dist_env()
    if env.world_size <= 1 or dist.is_initialized():
        return
    watchdog = threading.Timer(init_timeout, _give_up, args=(env, init_timeout, run_dir))
    watchdog.daemon = True
    watchdog.start()
    try:
        dist.initialize_dist(DeviceGPU() if device == "gpu" else DeviceCPU(), timeout=dist_timeout)
        dist.barrier()
    except DistNetworkError as e:
        if "EADDRINUSE" not in str(e) and "address already in use" not in str(e):
            raise
        raise RendezvousError(f"the rendezvous port {_where()} is in use (another launcher on this node?): give each "
                              "launcher its own port (composer --master_port, torchrun --master-port)") from None
    finally:
        watchdog.cancel()
