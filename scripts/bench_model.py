#!/usr/bin/env python
"""Forward+backward throughput: FlexBERT (packed, unpadded) vs transformers' ModernBertForMaskedLM
(SDPA, padded batches), same weights, on the ModernBERT paper's variable-length short set:
lengths ~ N(256, 64) clamped to [16, 512], 30% of tokens masked.

CPU (default):  python scripts/bench_model.py
GPU:            python scripts/bench_model.py --device cuda --dtype bf16 --config base

Both models see exactly the same sequences.  transformers gets batches of ``--batch-size``
sequences padded to the batch's longest; FlexBERT gets the same sequences packed back to back into
rows of ``--batch-size * 512`` tokens (as the data loader does).  Tokens/s counts real tokens only.
FlexBERT's loss is computed as in training: ``model.mlm_loss`` (``--mlm-loss``, default ``auto``:
liger on CUDA when installed, else chunked), no logits kept; ``--mlm-loss logits`` times the
HF-style path that returns logits instead.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from flexbert.convert.hf import config_to_hf
from flexbert.model import FlexBertForMaskedLM
from flexbert.model.config import FlexBertConfig

CONFIGS = {
    # CPU-sized: ModernBERT's shape scaled down, with the real 50k vocabulary (the decoder matters)
    "small": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4),
    "base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
}
MAX_LEN = 512


def make_sequences(n: int, vocab: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randn(n, generator=g).mul(64).add(256).round().clamp(16, MAX_LEN).long().tolist()
    return [torch.randint(5, vocab - 100, (n_,), generator=g) for n_ in lens]


def mask_tokens(ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))


def padded_batches(seqs, batch_size, pad_id, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        S = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), S), pad_id)
        mask = torch.zeros(len(chunk), S, dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, : len(s)], mask[j, : len(s)] = s, 1
        labels = torch.where(mask.bool(), mask_tokens(ids, g), torch.full_like(ids, -100))
        out.append(dict(input_ids=ids, attention_mask=mask, labels=labels))
    return out


def packed_rows(seqs, budget, pad_id, seed):
    """Best-fit-decreasing packing into rows of exactly ``budget`` tokens, standing in for the data
    loader's best-fit packer.  As there, the padding tail is covered by segments of at most
    ``MAX_LEN`` tokens (docs/internals.md)."""
    g = torch.Generator().manual_seed(seed)
    bins: list[list[torch.Tensor]] = []
    free: list[int] = []
    for s in sorted(seqs, key=len, reverse=True):
        fits = [i for i, f in enumerate(free) if f >= len(s)]
        i = min(fits, key=lambda i: free[i]) if fits else len(bins)
        if i == len(bins):
            bins.append([])
            free.append(budget)
        bins[i].append(s)
        free[i] -= len(s)
    rows = []
    for docs, tail in zip(bins, free):
        segs = [len(s) for s in docs] + [MAX_LEN] * (tail // MAX_LEN) + ([tail % MAX_LEN] if tail % MAX_LEN else [])
        ids = torch.cat(docs + [torch.full((tail,), pad_id)])
        labels = mask_tokens(ids, g)
        labels[budget - tail :] = -100
        cu = torch.tensor([0] + torch.tensor(segs).cumsum(0).tolist(), dtype=torch.int32)
        rows.append(dict(input_ids=ids, labels=labels, cu_seqlens=cu, max_seqlen=max(segs)))
    return rows


def to_device(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def time_pass(model, batches, device, dtype) -> float:
    """Seconds for forward + backward over all batches (gradients discarded); a batch may carry
    extra forward arguments (FlexBERT's ``return_logits``)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    sync()
    t0 = time.perf_counter()
    for b in batches:
        with autocast:
            loss = model(**b).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--num-seqs", type=int, default=None, help="sequences per pass (default: 96 CPU, 2048 GPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per HF batch (default: 8 CPU, 64 GPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per model, interleaved; the fastest is reported")
    ap.add_argument("--backends", default=None, help="FlexBERT attention backends, comma separated (default: sdpa on CPU, all available on GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--mlm-loss", default="auto", choices=["auto", "chunked", "liger", "plain", "logits"],
                    help="FlexBERT's loss: a model.mlm_loss as in training, or 'logits' (returns full logits)")
    return ap.parse_args()


def build_runs(args, device: torch.device, dtype: torch.dtype) -> tuple[list, int, int, list, list]:
    """Every model to time, with its batches: (runs, num_seqs, n_tokens, hf_batches, rows)."""
    gpu = device.type == "cuda"
    num_seqs = args.num_seqs or (2048 if gpu else 96)
    batch_size = args.batch_size or (64 if gpu else 8)
    if args.backends:
        backends = args.backends.split(",")
    elif gpu:
        from flexbert.model.backends import available_backends

        backends = available_backends(device, dtype)
    else:
        backends = ["sdpa"]

    base = dict(CONFIGS[args.config], attn_out_dropout=0.0, pad_token_id=50283)
    seqs = make_sequences(num_seqs, 50368, seed=0)
    hf_batches = [to_device(b, device) for b in padded_batches(seqs, batch_size, 50283, seed=1)]
    rows = [to_device(r, device) for r in packed_rows(seqs, batch_size * MAX_LEN, 50283, seed=1)]
    n_tokens = sum(len(s) for s in seqs)

    torch.manual_seed(0)
    flex_cfg = FlexBertConfig.from_dict(dict(base, attention_backend="sdpa"))
    reference = FlexBertForMaskedLM(flex_cfg)
    state = reference.state_dict()

    from transformers import ModernBertForMaskedLM

    # Build every model first, then interleave the timed passes (model A, B, C, A, B, C, ...) and
    # keep each model's fastest pass: on a shared machine, load drifts hit all models alike.
    runs = []  # (name, model, batches)
    for sparse in (False, True):
        hf_cfg = config_to_hf(flex_cfg)
        hf_cfg.sparse_prediction = sparse
        hf_cfg._attn_implementation = "sdpa"
        hf = ModernBertForMaskedLM(hf_cfg).to(device).train()
        hf.load_state_dict(state)
        name = "transformers ModernBERT, sdpa, padded" + (", sparse_prediction" if sparse else "")
        runs.append((name, hf, hf_batches))
    lean = args.mlm_loss != "logits"
    flex_rows = [dict(r, return_logits=False) for r in rows] if lean else rows
    for backend in backends:
        extra = dict(mlm_loss=args.mlm_loss) if lean else {}
        cfg = FlexBertConfig.from_dict(dict(base, attention_backend=backend, **extra))
        model = FlexBertForMaskedLM(cfg).to(device).train()
        model.load_state_dict(state)
        runs.append((f"FlexBERT, {backend}, packed, {args.mlm_loss} loss", model, flex_rows))
    return runs, num_seqs, n_tokens, hf_batches, rows


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    runs, num_seqs, n_tokens, hf_batches, rows = build_runs(args, device, dtype)
    batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
    for _, model, batches in runs:
        time_pass(model, batches[:2], device, dtype)  # warm-up (allocator, kernels, compile)
    best = {name: float("inf") for name, _, _ in runs}
    for _ in range(args.repeats):
        for name, model, batches in runs:
            best[name] = min(best[name], time_pass(model, batches, device, dtype))
    results = [(name, best[name]) for name, _, _ in runs]

    baseline = results[0][1]
    print(f"config={args.config} {CONFIGS[args.config]} vocab=50368 dtype={args.dtype} device={device}"
          f" threads={torch.get_num_threads()} torch={torch.__version__} python={platform.python_version()}")  # fmt: skip
    print(f"{num_seqs} sequences ~N(256,64) clamped [16,512], {n_tokens} real tokens, 30% masked; "
          f"HF: {len(hf_batches)} batches of {batch_size} (padding efficiency "
          f"{n_tokens / sum(b['input_ids'].numel() for b in hf_batches):.0%}); FlexBERT: {len(rows)} packed rows "
          f"of {batch_size * MAX_LEN} tokens (packing efficiency {n_tokens / (len(rows) * batch_size * MAX_LEN):.0%})")  # fmt: skip
    print()
    print(f"| {'model (forward+backward)':<52} | {'tokens/s':>10} | {'vs HF':>6} |")
    print(f"|{'-' * 54}|{'-' * 12}|{'-' * 8}|")
    for name, sec in results:
        print(f"| {name:<52} | {n_tokens / sec:>10,.0f} | {baseline / sec:>5.2f}x |")


if __name__ == "__main__":
    main()
