#!/usr/bin/env python
"""Inference throughput: FlexBERT's encoder (unpadded) vs transformers' ModernBertModel (padded,
SDPA) on the same weights, over the ModernBERT paper's four synthetic sets:

  fixed-512      every document 512 tokens
  variable-512   lengths ~ N(256, 64), clamped to [16, 512]
  fixed-8192     every document 8192 tokens
  variable-8192  lengths ~ N(4096, 1024), clamped to [16, 8192]

CPU (toy sizes):  python scripts/bench_inference.py
GPU:              python scripts/bench_inference.py --device cuda --dtype bf16 --config base --docs 8192 --long-docs 8192

Both models see the same documents in the same groups of ``--batch-size`` (``--long-batch-size``
for the 8192 sets): transformers pads each group to its longest document, FlexBERT concatenates it
without padding (``cu_seqlens``).  Tokens/s counts real tokens; each model's fastest of
``--repeats`` interleaved passes is reported (load drifts hit both alike).  The first group's
hidden states are compared, so a ratio is never reported for two different computations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
from bench_model import CONFIGS  # noqa: E402 (same folder)
from tqdm import tqdm

SETS = {"fixed-512": (512, None), "variable-512": (512, (256, 64)),
        "fixed-8192": (8192, None), "variable-8192": (8192, (4096, 1024))}
PAD = 50283


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="sets: " + ", ".join(SETS), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from: {', '.join(SETS)} (default: all four)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--docs", type=int, default=None, help="documents in each 512 set (default: 64 CPU, 8192 GPU)")
    p.add_argument("--long-docs", type=int, default=None, help="documents in each 8192 set (default: 4 CPU, 1024 GPU)")
    p.add_argument("--batch-size", type=int, default=None, help="documents per group, 512 sets (default: 8 CPU, 64 GPU)")
    p.add_argument("--long-batch-size", type=int, default=None, help="documents per group, 8192 sets (default: 1 CPU, 4 GPU)")
    p.add_argument("--length-divisor", type=int, default=1, help="divide every length by this (toy runs of the harness)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    a = p.parse_args(argv)
    unknown = [s for s in a.sets.split(",") if s not in SETS]
    if unknown:
        p.error(f"--sets: unknown set '{unknown[0]}'; valid: {', '.join(SETS)}")
    return a


def lengths(name: str, n: int, divisor: int, seed: int = 0) -> list[int]:
    top, dist = SETS[name]
    top = max(16, top // divisor)
    if dist is None:
        return [top] * n
    g = torch.Generator().manual_seed(seed)
    mean, std = dist[0] / divisor, dist[1] / divisor
    return torch.randn(n, generator=g).mul(std).add(mean).round().clamp(min(16, top), top).long().tolist()


def groups(lens: list[int], per_group: int, vocab: int, device) -> list[dict]:
    """Each group twice: padded (transformers) and concatenated with cu_seqlens (FlexBERT)."""
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(5, vocab - 100, (n,), generator=g) for n in lens]
    out = []
    for i in range(0, len(docs), per_group):
        chunk = docs[i: i + per_group]
        S = max(len(d) for d in chunk)
        ids = torch.full((len(chunk), S), PAD)
        mask = torch.zeros(len(chunk), S, dtype=torch.long)
        for j, d in enumerate(chunk):
            ids[j, : len(d)], mask[j, : len(d)] = d, 1
        cu = torch.tensor([0] + torch.tensor([len(d) for d in chunk]).cumsum(0).tolist(), dtype=torch.int32)
        out.append({"hf": dict(input_ids=ids.to(device), attention_mask=mask.to(device)),
                    "flex": dict(input_ids=torch.cat(chunk).to(device), cu_seqlens=cu.to(device), max_seqlen=S),
                    "tokens": sum(len(d) for d in chunk)})
    return out


def build_models(config: str, device, max_len: int):
    """(FlexBERT encoder, transformers ModernBertModel) with the same weights, eval mode."""
    from transformers import ModernBertForMaskedLM

    from flexbert.convert.hf import config_to_hf
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig

    torch.manual_seed(0)
    cfg = FlexBertConfig.from_dict(dict(CONFIGS[config], attn_out_dropout=0.0, pad_token_id=PAD,
                                        attention_backend="auto", max_position_embeddings=max(max_len, 8192)))
    flex = FlexBertForMaskedLM(cfg)
    hf_cfg = config_to_hf(cfg)
    hf_cfg._attn_implementation = "sdpa"
    hf = ModernBertForMaskedLM(hf_cfg)
    hf.load_state_dict(flex.state_dict())
    return flex.model.to(device).eval(), hf.model.to(device).eval(), cfg.vocab_size


def run_pass(model, batches, key: str, device, dtype) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        sync()
        t0 = time.perf_counter()
        for b in batches:
            model(**b[key])
        sync()
    return time.perf_counter() - t0


def max_difference(flex, hf, batch, device, dtype) -> float:
    """Largest |difference| of the real tokens' hidden states, FlexBERT vs transformers."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        a = flex(**batch["flex"]).float()
        h = hf(**batch["hf"]).last_hidden_state.float()
    b = h[batch["hf"]["attention_mask"].bool()]
    return float((a - b).abs().max())


def measure(name: str, a, flex, hf, vocab: int, device, dtype) -> dict:
    long = SETS[name][0] > 512
    n = (a.long_docs or (1024 if device.type == "cuda" else 4)) if long else (a.docs or (8192 if device.type == "cuda" else 64))
    per = (a.long_batch_size or (4 if device.type == "cuda" else 1)) if long else (a.batch_size or (64 if device.type == "cuda" else 8))
    batches = groups(lengths(name, n, a.length_divisor), per, vocab, device)
    diff = max_difference(flex, hf, batches[0], device, dtype)
    tolerance = 2e-3 if dtype == torch.float32 else 0.25
    if not diff <= tolerance:
        raise SystemExit(f"{name}: FlexBERT and transformers disagree (max |diff| {diff:.3g} > {tolerance}); not timing")
    for model, key in ((flex, "flex"), (hf, "hf")):
        run_pass(model, batches[:1], key, device, dtype)  # warm-up
    best = {"flex": float("inf"), "hf": float("inf")}
    bar = tqdm(total=2 * a.repeats, desc=f"{name} passes", unit=" pass", file=sys.stderr, leave=False,
               disable=not a.progress)  # a long set on a GPU takes minutes: show it moving (stderr: the table stays clean)
    for _ in range(a.repeats):
        for model, key in ((flex, "flex"), (hf, "hf")):
            best[key] = min(best[key], run_pass(model, batches, key, device, dtype))
            bar.update()
    bar.close()
    tokens = sum(b["tokens"] for b in batches)
    return {"set": name, "docs": n, "tokens": tokens, "flexbert_tokens_per_s": tokens / best["flex"],
            "transformers_tokens_per_s": tokens / best["hf"], "ratio": best["hf"] / best["flex"], "max_abs_diff": diff}


def main(argv=None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    if a.threads:
        torch.set_num_threads(a.threads)
    flex, hf, vocab = build_models(a.config, device, max(SETS[s][0] for s in a.sets.split(",")))
    print(f"config={a.config} {CONFIGS[a.config]} dtype={a.dtype} device={device} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} python={platform.python_version()} length divisor={a.length_divisor}", flush=True)
    print(f"| {'set':<14} | {'docs':>6} | {'tokens':>10} | {'FlexBERT tok/s':>14} | {'transformers tok/s':>18} | {'ratio':>6} |")
    print(f"|{'-' * 16}|{'-' * 8}|{'-' * 12}|{'-' * 16}|{'-' * 20}|{'-' * 8}|", flush=True)
    rows = []
    for name in a.sets.split(","):
        r = measure(name, a, flex, hf, vocab, device, dtype)
        rows.append(r)
        print(f"| {name:<14} | {r['docs']:>6} | {r['tokens']:>10,} | {r['flexbert_tokens_per_s']:>14,.0f} | "
              f"{r['transformers_tokens_per_s']:>18,.0f} | {r['ratio']:>5.2f}x |", flush=True)
        if a.json:  # each set as it finishes: a run cut short keeps what it measured
            with open(a.json + ".tmp", "w") as f:  # then renamed: a kill mid-write leaves the previous sets
                json.dump({"device": str(device), "dtype": a.dtype, "config": a.config, "rows": rows}, f, indent=2)
            os.replace(a.json + ".tmp", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
