"""The model card (``README.md``) written next to an exported model.

Everything in it is read from the run: the architecture from the model config, the training
config verbatim from the run's ``config.yaml``, tokens seen from the checkpoint's clock, and the
phases by following ``load_path`` back through the earlier runs' ``config.yaml`` files.
"""

from __future__ import annotations

import os
from typing import Optional

import torch


def _tokens_and_batches(checkpoint: str) -> tuple[Optional[int], Optional[int]]:
    try:
        ts = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["timestamp"]["Timestamp"]
        return int(ts["token"]), int(ts["batch"])
    except Exception:  # noqa: BLE001 - an averaged or foreign checkpoint may lack a clock
        return None, None


def _config_next_to(checkpoint: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "config.yaml")


def phase_history(config_path: str, checkpoint: str, limit: int = 10) -> list[dict]:
    """Oldest first: one dict per phase (run name, sequence length, theta, LR, schedule, tokens)."""
    import yaml

    phases = []
    while config_path and os.path.exists(config_path) and len(phases) < limit:
        with open(config_path) as f:
            cfg = yaml.safe_load(f) or {}  # train.py writes the complete, resolved config
        tokens, batches = _tokens_and_batches(checkpoint) if checkpoint and os.path.exists(checkpoint) else (None, None)
        phases.append({"run_name": cfg.get("run_name"), "max_seq_len": (cfg.get("data") or {}).get("max_seq_len"),
                       "global_rope_theta": (cfg.get("model") or {}).get("global_rope_theta"),
                       "lr": (cfg.get("optimizer") or {}).get("lr"), "scheduler": (cfg.get("scheduler") or {}).get("name"),
                       "tokens": tokens, "batches": batches,
                       "init": cfg.get("load_path") or cfg.get("init_from") or "random init"})
        checkpoint = cfg.get("load_path")
        config_path = _config_next_to(checkpoint) if checkpoint and "://" not in checkpoint else None
    return phases[::-1]


def _fmt(n) -> str:
    return "unknown" if n is None else f"{n:,}"


def _architecture(m, n_params: int) -> list[str]:
    rows = [("parameters", f"{n_params:,}"), ("layers", m.num_hidden_layers), ("hidden size", m.hidden_size),
            ("MLP size", f"{m.intermediate_size} ({m.mlp}, {m.activation})"),
            ("attention heads", f"{m.num_attention_heads} (head size {m.head_dim})"),
            ("attention", f"global every {m.global_attn_every_n_layers} layers, local window {m.local_attention}"),
            ("RoPE theta", f"global {m.global_rope_theta:g}, local {m.local_rope_theta:g}"),
            ("normalisation", f"{m.norm} ({m.block})"), ("vocabulary", m.vocab_size),
            ("max positions", m.max_position_embeddings)]
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _sentence_usage(name: str, pooling: str) -> list[str]:
    if pooling == "none":
        return ["As a sentence encoder with sentence-transformers (choose a pooling; fine-tune it first):", "",
                "```python", "from sentence_transformers import SentenceTransformer, models",
                f'encoder = models.Transformer("{name}")',
                'model = SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_word_embedding_dimension(), "mean")])',
                "```", ""]
    return [f"As a sentence encoder with sentence-transformers ({pooling} pooling over the encoder, set by the export; "
            "fine-tune it for embeddings first):", "", "```python", "from sentence_transformers import SentenceTransformer",
            f'model = SentenceTransformer("{name}")',
            'embeddings = model.encode(["first sentence", "second sentence"])', "```", ""]


def model_card(name: str, config_path: str, checkpoint: str, n_params: int, pooling: str = "none") -> str:
    from flexbert.train.config import load_run_config

    cfg = load_run_config(config_path)
    phases = phase_history(config_path, checkpoint)
    tokens, batches = _tokens_and_batches(checkpoint)
    with open(config_path) as f:
        raw_config = f.read().rstrip()
    lines = [f"# {name}", "", f"A ModernBERT-architecture masked language model trained with FlexBERT (run `{cfg.run_name}`).",
             "", "## Architecture", "", *_architecture(cfg.model, n_params), "",
             "## Training", "", f"This run: {_fmt(tokens)} tokens in {_fmt(batches)} batches "
             f"(sequence length {cfg.data.max_seq_len}).", "", "### Phases", "",
             "| # | run | sequence length | global RoPE theta | LR | schedule | tokens | started from |",
             "|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(phases, 1):
        lines.append(f"| {i} | {p['run_name']} | {p['max_seq_len']} | {p['global_rope_theta']} | {p['lr']} | "
                     f"{p['scheduler']} | {_fmt(p['tokens'])} | {p['init']} |")
    lines += ["", "### Training config (this run's config.yaml)", "", "```yaml", raw_config, "```", "",
              "## Usage", "", "With transformers (4.48 or newer):", "", "```python",
              "from transformers import AutoModelForMaskedLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{name}")',
              f'model = AutoModelForMaskedLM.from_pretrained("{name}")',
              'out = model(**tok("The capital of France is [MASK].", return_tensors="pt"))', "```", "",
              *_sentence_usage(name, pooling),
              f"To continue pretraining with FlexBERT: `init_from: {name}` in a run config.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str, config_path: str, checkpoint: str, n_params: int, pooling: str = "none") -> str:
    path = os.path.join(out_dir, "README.md")
    name = os.path.basename(os.path.normpath(out_dir))
    with open(path, "w") as f:
        f.write(model_card(name, config_path, checkpoint, n_params, pooling))
    return path
