"""The CUDA side of ``data.microbatch_size: auto`` (flexbert/train/microbatch.py): does a row of
``mb`` sequences train on this GPU?  Needs CUDA; the search around it is tested on CPU."""

from __future__ import annotations

import dataclasses
import gc
import math
import os

import torch

from flexbert.config import IGNORE_INDEX


def synthetic_row(data_cfg, model_cfg, microbatch_size: int, device) -> dict:
    """A full row in the loader's format: documents of ``max_seq_len`` tokens, the masked share
    1% above the configured rate (the loader's masks are random; its rows rarely mask more)."""
    seq, tokens = data_cfg.max_seq_len, microbatch_size * data_cfg.max_seq_len
    ids = torch.randint(0, model_cfg.vocab_size, (tokens,), device=device)
    n_masked = min(tokens, math.ceil(tokens * data_cfg.max_mlm_probability * 1.01))
    labels = torch.full((tokens,), IGNORE_INDEX, dtype=torch.long, device=device)
    where = torch.randperm(tokens, device=device)[:n_masked]
    labels[where] = ids[where]
    cu = torch.arange(0, tokens + 1, seq, dtype=torch.int32, device=device)
    return {"input_ids": ids, "labels": labels, "cu_seqlens": cu, "max_seqlen": seq,
            "num_tokens": tokens, "num_masked": n_masked}


def estimate_start(cfg, candidates) -> int | None:
    """Where the search starts: the largest candidate the estimate fits into this GPU."""
    from flexbert.train.memory import largest_fitting

    data = cfg.data
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return largest_fitting(cfg.model, data.max_seq_len, candidates, "none", data.max_mlm_probability, gpu_bytes=total)


def cuda_fits(cfg, safety: float):
    """A ``fits(mb) -> bool`` probe: two training steps (eager, the run's precision) over
    synthetic rows of ``mb`` sequences; fits when peak reserved memory <= (1 - safety) x GPU."""
    from flexbert.train.recipe import build_model, resolve_precision
    from flexbert.train.run_folder import with_microbatch
    from flexbert.train.optim import build_optimizer

    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
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
                row = synthetic_row(data, trial.model, mb, device)
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

