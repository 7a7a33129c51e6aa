#!/usr/bin/env python
"""End-to-end training throughput: ``train.py`` vs a plain transformers baseline.

    python scripts/bench_train.py --shards runs/demo/shards [--tokens 300000] [--config configs/tiny.yaml]

FlexBERT: ``python train.py CONFIG`` as a user runs it (Composer Trainer, Streaming shards,
best-fit packing, unpadded attention, sparse prediction, StableAdamW), no eval or checkpoints,
constant batch; tokens/s = real tokens / time from fit start to fit end (its own "done" line).

Baseline: transformers' ``ModernBertForMaskedLM`` with the same architecture (the config that
``flexbert.convert.hf`` exports, transformers' defaults otherwise: SDPA, dense prediction), fed the
same documents read from the same shards, ``global_batch_size`` documents per step padded by
``DataCollatorForLanguageModeling`` (30% masking), torch AdamW, a plain loop; tokens/s = real
(non-pad) tokens / loop time including collation.  Same token budget, same process settings.
One run each; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flexbert_run(config: str, shards: str, tokens: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_train") as tmp:
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), config, f"data.local={shards}", f"run_dir={tmp}",
               f"max_duration={tokens}tok", "save_folder=", "eval_interval=1000000ba", "data.batch_size_warmup_min=0",
               "loggers.console_interval=1000000", "loggers.jsonl=false", *extra]
        env = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed: {proc.stderr.strip()[-2000:]}")
    m = re.search(r"done: (\d+) batches, ([\d.]+)([KMB]?) tokens in ([\d.]+)s", proc.stdout)
    if not m:
        raise SystemExit(f"no 'done' line in train.py output:\n{proc.stdout[-2000:]}")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[m.group(3)]
    n_tokens, secs = float(m.group(2)) * scale, float(m.group(4))
    return {"steps": int(m.group(1)), "tokens": n_tokens, "seconds": secs, "tokens_per_s": n_tokens / secs}


def baseline_run(config: str, shards: str, tokens: int, extra: list[str], sparse: bool = False) -> dict:
    import torch
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, ModernBertForMaskedLM

    from flexbert.convert.hf import config_to_hf
    from flexbert.data.source import tokenizer_dir
    from flexbert.train.config import load_run_config, with_known_data

    cfg = with_known_data(load_run_config(config, [f"data.local={shards}", *extra]))
    data = cfg.data
    hf_config = config_to_hf(cfg.model)
    hf_config._attn_implementation = "sdpa"
    hf_config.sparse_prediction = sparse  # transformers' default is False
    torch.manual_seed(cfg.seed)
    model = ModernBertForMaskedLM(hf_config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas),
                            eps=cfg.optimizer.eps, weight_decay=cfg.optimizer.weight_decay)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir(data))
    collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=data.max_mlm_probability)
    clean_stale_shared_memory()
    ds = StreamingDataset(local=shards, split=data.split, shuffle=True, shuffle_seed=cfg.seed, batch_size=1)
    docs_per_step = data.global_batch_size or data.microbatch_size
    seen, steps, padded = 0, 0, 0
    it = iter(ds)
    t0 = time.perf_counter()
    while seen < tokens:
        docs = []
        for _ in range(docs_per_step):
            try:
                sample = next(it)
            except StopIteration:
                it = iter(ds)
                sample = next(it)
            docs.append({"input_ids": sample["input_ids"].astype("int64").tolist()})
        batch = collator(docs)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += int(batch["attention_mask"].sum())
        padded += int(batch["input_ids"].numel())
        steps += 1
    secs = time.perf_counter() - t0
    return {"steps": steps, "tokens": seen, "seconds": secs, "tokens_per_s": seen / secs, "padding": 1 - seen / padded}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", default=os.path.join(ROOT, "runs", "demo", "shards"), help="MDS shards (make demo writes runs/demo/shards)")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "tiny.yaml"))
    p.add_argument("--tokens", type=int, default=300_000, help="token budget of each run")
    p.add_argument("--hf-sparse", action="store_true", help="switch on transformers' sparse_prediction in the baseline")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to both runs (model/data/optimizer)")
    a = p.parse_args(argv)
    if not os.path.exists(os.path.join(a.shards, "train", "index.json")):
        raise SystemExit(f"no shards at {a.shards}: run `make demo` first (or pass --shards)")
    import torch

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"config: {os.path.relpath(a.config, ROOT)} {' '.join(a.overrides)}; budget {a.tokens:,} tokens each", flush=True)
    flex = flexbert_run(a.config, a.shards, a.tokens, a.overrides)
    print(f"FlexBERT train.py : {flex['tokens_per_s']:10,.0f} tok/s  ({flex['tokens']:,.0f} tokens, {flex['steps']} steps, "
          f"{flex['seconds']:.1f}s)", flush=True)
    base = baseline_run(a.config, a.shards, a.tokens, a.overrides, sparse=a.hf_sparse)
    print(f"HF baseline{' (sparse)' if a.hf_sparse else '         '}: {base['tokens_per_s']:10,.0f} tok/s  ({base['tokens']:,} tokens, {base['steps']} steps, "
          f"{base['seconds']:.1f}s, {100 * base['padding']:.0f}% of each batch is padding)")
    print(f"ratio FlexBERT / baseline: {flex['tokens_per_s'] / base['tokens_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
