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
"""

from __future__ import annotations

import warnings
from typing import Optional

from composer.devices import DeviceCPU, DeviceGPU
from composer.utils import dist
from composer.utils.parallelism import FSDP2Config
from torch.distributed.device_mesh import init_device_mesh

from flexbert.registry import ConfigError
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
