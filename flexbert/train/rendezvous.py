"""Meeting the other ranks: within ``dist_init_timeout`` seconds, or one line saying what happened.

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

from composer.devices import DeviceCPU, DeviceGPU
from composer.utils import dist
from torch.distributed import DistNetworkError

from flexbert.env import DistEnv, dist_env
from flexbert.errors import FlexBertError
from flexbert.train import run_lock

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
