"""Write a tiled model: the file side of weight tiling (``scripts/tile_weights.py``).

The tensor work is ``flexbert/model/tiling.py`` (plain PyTorch); the source is read through
``flexbert/weights/load.py`` (run folder, checkpoint or Hugging Face folder), the target's size
from a run config, and the output is written by the converter.
"""

from __future__ import annotations

import os

import torch

from flexbert.model.tiling import TilingError, gopher_layer_map, tile_model
from flexbert.weights.export import ExportError, check_export_tokenizer


def write_tiled(src: str, target_config: str, out_dir: str, mode: str = "center_wraparound",
                seed: int = 0, tokenizer: str | None = None, overrides: list[str] | None = None,
                rescale: bool = False, overwrite: bool = False) -> dict:
    """Tile the model at ``src`` into the model section of ``target_config`` and write ``out_dir``.

    Export format (config.json, model.safetensors, tokenizer) when transformers' ModernBERT can
    express the target; otherwise only ``out_dir/model.safetensors`` in FlexBERT names (use it as
    ``init_from: out_dir/model.safetensors``).  Everything is checked before ``out_dir`` is touched
    (a non-empty one is replaced whole only with ``overwrite``).  Returns a summary.
    """
    from flexbert.data.outputs import prepare_output_dir
    from flexbert.convert.hf import ConversionError, to_hf
    from flexbert.model.model import FlexBertForMaskedLM
    from flexbert.train.config import load_run_config, with_known_data
    from flexbert.weights.load import ModelLoadError, load_pretrained, mlm_model

    try:
        source = load_pretrained(src)
        src_model = mlm_model(source)
    except ModelLoadError as e:
        raise TilingError(str(e).replace("--model ", "--from ", 1)) from None
    tgt_cfg = with_known_data(load_run_config(target_config, overrides)).model
    torch.manual_seed(seed)  # the fresh init `center` keeps around the source
    target = tile_model(src_model, FlexBertForMaskedLM(tgt_cfg), mode, rescale).eval()
    tok_dir = tokenizer or source.tokenizer_dir
    tok = None
    if tok_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_dir)
        try:
            check_export_tokenizer(tok, tok_dir, source.tokenizer_fingerprint, f"--from {src}", tgt_cfg.vocab_size)
        except ExportError as e:
            raise TilingError(str(e)) from None
    prepare_output_dir(out_dir, overwrite=overwrite, inputs=[source.path, target_config, tok_dir], keep=[src])
    try:
        to_hf(target, out_dir, tokenizer=tok)
        init_from = out_dir
    except ConversionError:
        from safetensors.torch import save_file

        from flexbert.convert.hf import DIGEST_KEY, tensors_digest

        os.makedirs(out_dir, exist_ok=True)
        sd = {k: v.contiguous() for k, v in target.state_dict().items() if not (tgt_cfg.tie_word_embeddings and k == "decoder.weight")}
        init_from = os.path.join(out_dir, "model.safetensors")
        save_file(sd, init_from, metadata={"format": "pt", DIGEST_KEY: tensors_digest(sd)})
    return {"source": src, "mode": mode + (", rescaled" if rescale else ""), "layers": gopher_layer_map(source.config.num_hidden_layers,
            tgt_cfg.num_hidden_layers), "init_from": init_from, "tokenizer": tok_dir}
