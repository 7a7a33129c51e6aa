"""The files that make an exported folder a sentence-transformers model as well.

``SentenceTransformer(folder)`` reads ``modules.json`` (here: the transformer, then pooling),
``sentence_bert_config.json`` (the longest input, in tokens) and ``1_Pooling/config.json``.  The
weights are the export's own ``model.safetensors``: transformers' ``AutoModel`` loads the encoder
out of the masked-LM folder and ignores the head, so one folder serves both libraries.  Without
these files sentence-transformers guesses mean pooling and says so in a warning; with them the
choice is the exporter's (``mean`` or ``cls``) and the folder loads silently.
"""

from __future__ import annotations

import json
import os

from flexbert.registry import unknown_choice

POOLINGS = ("mean", "cls", "none")  # none: no sentence-transformers files

_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def _dump(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_sentence_transformers(out_dir: str, hidden_size: int, max_seq_length: int, pooling: str = "mean") -> list[str]:
    """Write the sentence-transformers files into ``out_dir``; returns the paths written."""
    if pooling not in POOLINGS:
        raise ValueError(unknown_choice("pooling", "pooling", pooling, POOLINGS))
    if pooling == "none":
        return []
    chosen = {"mean": "mean_tokens", "cls": "cls_token"}[pooling]
    os.makedirs(os.path.join(out_dir, "1_Pooling"), exist_ok=True)
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": int(max_seq_length), "do_lower_case": False},
        os.path.join("1_Pooling", "config.json"): {
            "word_embedding_dimension": int(hidden_size),
            **{f"pooling_mode_{m}": m == chosen for m in _MODES},
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": {},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
    }
    written = []
    for name, obj in files.items():
        path = os.path.join(out_dir, name)
        _dump(path, obj)
        written.append(path)
    return written
