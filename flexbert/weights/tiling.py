"""Write a tiled model: the file side of weight tiling (``flexbert tile``).

The tensor work is ``flexbert/model/tiling.py`` (plain PyTorch); the source is read through
``flexbert/weights/load.py`` (run folder, checkpoint or Hugging Face folder), the target's size
from a run config, and the output is written by flexbert/weights/writer.py.
"""

from __future__ import annotations

import torch

from flexbert.model.model import FlexBertForMaskedLM
from flexbert.model.tiling import TilingError, gopher_layer_map, tile_model
from flexbert.train.config import load_run_config, with_known_data
from flexbert.weights.load import load_source
from flexbert.weights.writer import ModelWriter


def write_tiled(src: str, target_config: str, out_dir: str, mode: str = "center_wraparound",
                seed: int = 0, tokenizer: str | None = None, overrides: list[str] | None = None,
                rescale: bool = False, overwrite: bool = False) -> dict:
    """Tile the model at ``src`` into the model section of ``target_config`` and write ``out_dir``.

    Export format (config.json, model.safetensors, tokenizer) when transformers' ModernBERT can
    express the target; otherwise only ``out_dir/model.safetensors`` in FlexBERT names (use it as
    ``init_from: out_dir/model.safetensors``).  Everything is checked before ``out_dir`` is touched
    (a non-empty one is replaced whole only with ``overwrite``).  Returns a summary.
    """
    writer = ModelWriter("tile", out_dir, overwrite, inputs=[target_config], keep=[src])
    source = load_source(src, writer, TilingError)
    src_model = source.model
    tgt_cfg = with_known_data(load_run_config(target_config, overrides)).model
    torch.manual_seed(seed)  # the fresh init `center` keeps around the source
    target = tile_model(src_model, FlexBertForMaskedLM(tgt_cfg), mode, rescale).eval()
    writer.tokenizer(tokenizer or source.tokenizer_dir, source.tokenizer_fingerprint, f"--from {src}", tgt_cfg.vocab_size)
    init_from = writer.write_mlm(target)
    layers = gopher_layer_map(source.config.num_hidden_layers, tgt_cfg.num_hidden_layers)
    writer.record([source.path, target_config], {"mode": mode, "rescale": rescale, "seed": seed, "overrides": list(overrides or []),
                                                 "layers": layers})
    return {"source": src, "mode": mode + (", rescaled" if rescale else ""), "layers": layers, "init_from": init_from,
            "tokenizer": writer.tokenizer_dir}
