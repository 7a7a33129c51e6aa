"""``data.microbatch_size: auto``: the largest packed row that fits, chosen once per run.

On a GPU the choice is made by trying: a real forward + backward + optimizer step (twice, so the
optimizer moments and the previous step's outputs are alive, as in training) over a synthetic
row of each candidate size.  A candidate fits when the step's peak reserved memory stays under
``1 - SAFETY`` of the GPU (10% kept free for fragmentation, the CUDA context and unlucky masking
draws) and raises no out-of-memory error.  Candidates are the divisors of the per-rank batch
(``global_batch_size / world_size``), so the global batch is kept by gradient accumulation.  The
search starts at the largest candidate the memory estimate (flexbert/train/memory.py) allows,
walks up while rows fit and down while they do not.  The probe runs eagerly: eager mode needs the
most memory of the compile modes (facts §6), so the choice also holds compiled.  With several
ranks every rank probes its own GPU and all take the smallest choice.

On CPU ``auto`` does not probe: memory is not what limits a CPU run, so it takes the largest
divisor of the per-rank batch whose row holds at most ``CPU_ROW_TOKENS`` tokens, and says so.

The choice is written to ``{run_dir}/microbatch.json`` and read back on every resume, so a run
keeps its row size (and its data loader's exact position) for its whole life.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
from typing import Callable, Optional, Sequence

import torch
from composer.devices import DeviceGPU
from composer.utils import dist

from flexbert.config import IGNORE_INDEX, ConfigError
from flexbert.env import dist_env
from flexbert.train.memory import largest_fitting
from flexbert.train.optim import build_optimizer
from flexbert.train.recipe import build_model, resolve_device, resolve_precision
from flexbert.train.run_folder import MICROBATCH, RunFolder, with_microbatch

log = logging.getLogger(__name__)

RECORD = MICROBATCH  # the file name (the run folder owns it)
SAFETY = 0.10
CPU_ROW_TOKENS = 8192


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def search(candidates: Sequence[int], fits: Callable[[int], bool], start: Optional[int] = None) -> tuple[Optional[int], list]:
    """The largest candidate for which ``fits`` holds (``fits`` is assumed monotone: a row that
    fits has every smaller row fit).  Starts at the largest candidate <= ``start`` (default the
    largest), climbs while rows fit, descends while they do not.  Returns (choice or None, the
    probes made as (size, fits) in order)."""
    cands = sorted(set(candidates))
    if not cands:
        return None, []
    i = max([k for k, c in enumerate(cands) if start is None or c <= start] or [0])
    tried: list = []

    def probe(k: int) -> bool:
        ok = bool(fits(cands[k]))
        tried.append((cands[k], ok))
        return ok

    if probe(i):
        while i + 1 < len(cands) and probe(i + 1):
            i += 1
        return cands[i], tried
    while i > 0:
        i -= 1
        if probe(i):
            return cands[i], tried
    return None, tried


def per_rank_batch(global_batch_size: int, world_size: int) -> int:
    if global_batch_size % world_size:
        raise ConfigError(f"data.global_batch_size: {global_batch_size} is not a multiple of the {world_size} ranks")
    return global_batch_size // world_size


def cpu_choice(per_rank: int, max_seq_len: int) -> int:
    fitting = [d for d in divisors(per_rank) if d * max_seq_len <= CPU_ROW_TOKENS]
    return max(fitting or [1])


def resolve_microbatch(cfg, device: Optional[str] = None, world_size: Optional[int] = None, fits=None):
    """``cfg`` with ``data.microbatch_size`` a number (unchanged unless it is ``auto``).

    ``fits`` replaces the GPU probe (tests use a fake memory limit)."""
    data = cfg.data
    if data.microbatch_size != "auto":
        return cfg
    world_size = world_size or dist_env().world_size
    per_rank = per_rank_batch(data.global_batch_size, world_size)
    run_dir = cfg.resolved_run_dir
    run = RunFolder(run_dir)
    record = run.microbatch_record()
    if record is not None:
        mb = int(record["microbatch_size"])
        if per_rank % mb:
            raise ConfigError(f"data.microbatch_size: auto chose {mb} for this run ({os.path.join(run_dir, RECORD)}), which does "
                             f"not divide the per-rank batch {per_rank} now; restore the run's batch or delete that file")
        log.info("data.microbatch_size: auto -> %d (kept from %s)", mb, os.path.join(run_dir, RECORD))
        return with_microbatch(cfg, mb)
    if device is None:
        device = resolve_device(cfg.device)
    if fits is None and device == "cpu":
        mb, how, tried = cpu_choice(per_rank, data.max_seq_len), f"cpu rule: largest divisor with a row <= {CPU_ROW_TOKENS} tokens", []
    else:
        start, real = None, fits is None
        if real:
            fits, start = cuda_fits(cfg, SAFETY), estimate_start(cfg, divisors(per_rank))
        mb, tried = search(divisors(per_rank), fits, start)
        if mb is None:
            raise ConfigError(f"data.microbatch_size: auto found no row that fits (tried {tried}); shorten max_seq_len or the model")
        if real:
            mb = _agree(mb, world_size)
        how = "probed " + ", ".join(f"{m}:{'fits' if ok else 'no'}" for m, ok in tried)
    log.warning("data.microbatch_size: auto -> %d (%d x %d = %d tokens per row; %s)", mb, mb, data.max_seq_len,
                mb * data.max_seq_len, how)
    if dist_env().is_main:
        run.write_microbatch_record({"microbatch_size": mb, "max_seq_len": data.max_seq_len, "per_rank_batch": per_rank,
                                     "world_size": world_size, "device": device, "how": how, "probes": tried})
    return with_microbatch(cfg, mb)


def _agree(mb: int, world_size: int) -> int:
    """The smallest choice over the ranks (each probed its own GPU)."""
    if world_size <= 1:
        return mb
    dist.initialize_dist(DeviceGPU())  # the Trainer reuses this process group
    t = torch.tensor([mb], device="cuda")
    dist.all_reduce(t, reduce_operation="MIN")
    return int(t.item())


# --------------------------------------------------------------------------- the CUDA probe
def synthetic_row(data_cfg, model_cfg, microbatch_size: int, device, predicted: float) -> dict:
    """A full row in the loader's format: documents of ``max_seq_len`` tokens, the masked share
    1% above ``predicted`` (the configured rate, 1.0 under CLM; the loader's masks are random,
    its rows rarely mask more)."""
    seq, tokens = data_cfg.max_seq_len, microbatch_size * data_cfg.max_seq_len
    ids = torch.randint(0, model_cfg.vocab_size, (tokens,), device=device)
    n_masked = min(tokens, math.ceil(tokens * predicted * 1.01))
    labels = torch.full((tokens,), IGNORE_INDEX, dtype=torch.long, device=device)
    where = torch.randperm(tokens, device=device)[:n_masked]
    labels[where] = ids[where]
    cu = torch.arange(0, tokens + 1, seq, dtype=torch.int32, device=device)
    return {"input_ids": ids, "labels": labels, "cu_seqlens": cu, "max_seqlen": seq,
            "num_tokens": tokens, "num_masked": n_masked}


def estimate_start(cfg, candidates) -> int | None:
    """Where the search starts: the largest candidate the estimate fits into this GPU."""
    data = cfg.data
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return largest_fitting(cfg.model, data.max_seq_len, candidates, "none", cfg.max_predicted_fraction(), gpu_bytes=total)


def cuda_fits(cfg, safety: float):
    """A ``fits(mb) -> bool`` probe: two training steps (eager, the run's precision) over
    synthetic rows of ``mb`` sequences; fits when peak reserved memory <= (1 - safety) x GPU."""
    torch.cuda.set_device(dist_env().local_rank)
    device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    precision = resolve_precision(cfg.precision, "gpu")
    dtype = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(precision)
    eager = dataclasses.replace(cfg, compile="none")

    def fits(mb: int) -> bool:
        trial = with_microbatch(eager, mb)
        data = trial.data
        model = opt = outputs = loss = None
        try:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            model = build_model(trial).to(device).train()
            opt = build_optimizer(model, trial.optimizer, on_cuda=True)
            for _ in range(2):
                row = synthetic_row(data, trial.model, mb, device, trial.max_predicted_fraction())
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    outputs = model(row)  # the previous outputs stay alive until here, as in Composer
                    loss = model.loss(outputs, row)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_reserved(device) <= (1.0 - safety) * total
        except torch.OutOfMemoryError:
            return False
        finally:
            del model, opt, outputs, loss
            gc.collect()
            torch.cuda.empty_cache()

    return fits

