"""Write a pruned model: the file side of ``flexbert prune``.

The tensor work is flexbert/model/pruning.py (plain PyTorch); the source is read through
flexbert/weights/load.py (run folder, checkpoint or Hugging Face folder) and the output written by
flexbert/weights/writer.py: a Hugging Face ModernBERT folder (``init_from: OUT`` in a run config,
``AutoModelForMaskedLM.from_pretrained(OUT)``), or FlexBERT-named ``OUT/model.safetensors`` when
transformers cannot express the model.
"""

from __future__ import annotations

from typing import Optional, Sequence

from flexbert.model.pruning import PruningError, prune_model, select_layers
from flexbert.weights.load import load_source
from flexbert.weights.writer import ModelWriter


def model_overrides(cfg) -> list[str]:
    """The ``model.*`` overrides a run config needs to train the pruned model (``init_from`` needs
    the configured shapes to match the weights)."""
    return [f"model.num_hidden_layers={cfg.num_hidden_layers}", f"model.intermediate_size={cfg.intermediate_size}",
            f"model.global_attn_every_n_layers={cfg.global_attn_every_n_layers}"]


def write_pruned(src: str, out_dir: str, keep: Optional[Sequence[int]] = None, every: Optional[int] = None,
                 depth: Optional[int] = None, mlp_width: Optional[int] = None, tokenizer: Optional[str] = None,
                 overwrite: bool = False) -> dict:
    """Prune the model at ``src`` and write ``out_dir``; everything is checked before ``out_dir``
    is touched.  Returns a summary: the layers kept, the new shape, what ``init_from`` takes."""
    writer = ModelWriter("prune", out_dir, overwrite, keep=[src])
    source = load_source(src, writer, PruningError)
    src_model = source.model
    writer.check()
    n = source.config.num_hidden_layers
    layers = select_layers(n, keep, every, depth)
    option = "--keep" if keep is not None else "--every" if every is not None else "--depth"
    pruned = prune_model(src_model, layers, mlp_width, option)
    writer.tokenizer(tokenizer or source.tokenizer_dir, source.tokenizer_fingerprint, f"--from {src}", pruned.config.vocab_size)
    init_from = writer.write_mlm(pruned)
    settings = {"layers": layers, "source_layers": n, "mlp_width": pruned.config.intermediate_size,
                "source_mlp_width": source.config.intermediate_size,
                "global_attn_every_n_layers": pruned.config.global_attn_every_n_layers}
    writer.record([source.path], settings)
    params = sum(p.numel() for p in pruned.parameters())
    return {"source": src, **settings, "init_from": init_from, "overrides": model_overrides(pruned.config),
            "parameters": params, "source_parameters": sum(p.numel() for p in src_model.parameters())}
