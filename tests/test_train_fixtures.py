"""Shared builders for the training tests (imported as ``test_train_fixtures``; holds no tests).

Real inputs, built with the data package's library functions: English text from Python's own
documentation (``pydoc_data.topics``, offline), a small byte-level BPE (``train_bpe``), MDS shards
(``tokenize_to_mds``), and a small model config.  Everything is cached per test session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
_CACHE: dict = {}


def documents() -> list[str]:
    """~2,000 paragraphs of real English (Python reference documentation)."""
    from pydoc_data.topics import topics

    paras = []
    for key in sorted(topics):
        for p in re.split(r"\n\s*\n", topics[key]):
            p = " ".join(p.split())
            if len(p) > 40:
                paras.append(p)
    return paras


def data_dir(factory, max_seq_len: int = 128) -> str:
    """Tokenizer + train/validation MDS shards, written once per session."""
    key = ("data", max_seq_len)
    if key in _CACHE:
        return _CACHE[key]
    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.data.tokenizer import save_tokenizer, train_bpe

    root = factory.mktemp(f"train_data_{max_seq_len}")
    docs = documents()
    tok_dir = str(root / "tokenizer")
    save_tokenizer(train_bpe(docs, vocab_size=1024, min_frequency=2), tok_dir)
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    out = str(root / "shards")
    tokenize_to_mds([str(corpus)], tok_dir, out, ShardOptions(max_seq_len=max_seq_len, val_fraction=0.05,
                                                             progress=False, size_limit="256kb"))
    _CACHE[key] = out
    return out


def model_overrides(vocab: int = 1024, hidden: int = 64, layers: int = 2, **extra) -> dict:
    m = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3 // 2, num_hidden_layers=layers,
             num_attention_heads=max(1, hidden // 32), local_attention=32, global_attn_every_n_layers=2,
             attention_backend="sdpa", pad_token_id=0, cls_token_id=2, sep_token_id=3, mask_token_id=4)
    m.update(extra)
    return m


def run_config(tmp_path, data: str, **top) -> dict:
    """A complete, small run config as a dict (override anything through ``top``)."""
    cfg = {
        "run_name": "t",
        "run_dir": str(tmp_path / "run"),
        "seed": 7,
        "model": model_overrides(),
        "data": {"local": data, "max_seq_len": 128, "microbatch_size": 2, "global_batch_size": 4,
                 "num_workers": 0, "doc_batch_size": 32, "packer_buffer_size": 64},
        "optimizer": {"name": "stable_adamw", "lr": 2e-3, "weight_decay": 1e-5},
        "scheduler": {"name": "constant_with_warmup", "t_warmup": "2ba"},
        "max_duration": "8ba",
        "eval_interval": "1000ba",
        "eval_subset_num_batches": 4,
        "save_interval": "1000ba",
        "loggers": {"console": False, "jsonl": True},
        "callbacks": {"throughput": True},
    }
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def to_overrides(d: dict, prefix: str = "") -> list[str]:
    """A nested dict as ``key=value`` CLI overrides."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += to_overrides(v, key + ".")
        elif v is None:
            out.append(f"{key}=null")
        elif isinstance(v, bool):
            out.append(f"{key}={'true' if v else 'false'}")
        elif isinstance(v, list):
            out.append(f"{key}=[{','.join(map(str, v))}]")
        else:
            out.append(f"{key}={v}")
    return out


def build_and_fit(cfg_dict: dict, extra_callbacks=None):
    """Validate ``cfg_dict`` like train.py does, build the trainer, fit, close; returns the TrainRun."""
    from streaming.base.util import clean_stale_shared_memory

    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    clean_stale_shared_memory()
    cfg = from_dict(RunConfig, cfg_dict, "")
    run = build_trainer(cfg, extra_callbacks=extra_callbacks)
    try:
        run.fit()
    finally:
        run.close()
    return run


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_py(args: list[str], cwd: str | None = None, env: dict | None = None, timeout: int = 240, launcher=None):
    """Run ``python train.py ARGS`` (or ``composer -n N train.py``) and return the CompletedProcess."""
    e = dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    e.update(env or {})
    if launcher:
        cmd = [os.path.join(os.path.dirname(PY), "composer"), "-n", str(launcher), os.path.join(ROOT, "train.py"), *args]
    else:
        cmd = [PY, os.path.join(ROOT, "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, env=e, capture_output=True, text=True, timeout=timeout)
