"""The model card (``README.md``) written next to an exported model.

A renderer only: what it shows (architecture, this run's progress and config, the phases) is read
from the run by the exporter (flexbert/weights/export.py) and handed in as plain values.  The card
opens with the Hugging Face Hub's metadata header (YAML between ``---`` lines: library, pipeline,
tags), written by huggingface_hub's ``ModelCardData`` so the Hub shows the right widget and filters.
"""

from __future__ import annotations

import os

from huggingface_hub import ModelCardData

TAGS = ["modernbert", "flexbert", "fill-mask", "masked-lm"]


def metadata_header(sentence_transformers: bool = False) -> str:
    """The Hub's metadata block of the card."""
    tags = TAGS + (["sentence-transformers", "feature-extraction"] if sentence_transformers else [])
    data = ModelCardData(library_name="transformers", pipeline_tag="fill-mask", tags=tags)
    return f"---\n{data.to_yaml()}\n---\n"


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


def model_card(name: str, model_cfg, run: dict, phases: list[dict], n_params: int, pooling: str = "none") -> str:
    """``run``: run_name, max_seq_len, tokens, batches, config_yaml (the config the weights were
    trained with); ``phases``: oldest first, as flexbert/weights/export.py ``phase_history`` gives them."""
    lines = [metadata_header(pooling != "none") + f"# {name}", "", f"A ModernBERT-architecture masked language model trained with FlexBERT (run `{run['run_name']}`).",
             "", "## Architecture", "", *_architecture(model_cfg, n_params), "",
             "## Training", "", f"This run: {_fmt(run['tokens'])} tokens in {_fmt(run['batches'])} batches "
             f"(sequence length {run['max_seq_len']}).", "", "### Phases", "",
             "| # | run | sequence length | global RoPE theta | LR | schedule | tokens | started from |",
             "|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(phases, 1):
        lines.append(f"| {i} | {p['run_name']} | {p['max_seq_len']} | {p['global_rope_theta']} | {p['lr']} | "
                     f"{p['scheduler']} | {_fmt(p['tokens'])} | {p['init']} |")
    lines += ["", "### Training config (this run's config.yaml)", "", "```yaml", run["config_yaml"].rstrip(), "```", "",
              "## Usage", "", "With transformers (4.48 or newer):", "", "```python",
              "from transformers import AutoModelForMaskedLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{name}")',
              f'model = AutoModelForMaskedLM.from_pretrained("{name}")',
              'out = model(**tok("The capital of France is [MASK].", return_tensors="pt"))', "```", "",
              *_sentence_usage(name, pooling),
              f"To continue pretraining with FlexBERT: `init_from: {name}` in a run config.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str, model_cfg, run: dict, phases: list[dict], n_params: int, pooling: str = "none",
                     name: str = "") -> str:
    """``OUT/README.md``; ``name``: what the usage snippets load (default: the folder's name; a Hub repo id)."""
    path = os.path.join(out_dir, "README.md")
    name = name or os.path.basename(os.path.normpath(out_dir))
    with open(path, "w") as f:
        f.write(model_card(name, model_cfg, run, phases, n_params, pooling))
    return path
