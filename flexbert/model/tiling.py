"""Grow a trained FlexBERT model into a wider and/or deeper one by weight tiling.

ModernBERT-large started from ModernBERT-base this way: every tensor of the source is placed in
the middle of the larger tensor and the rest is filled by wrapping the source around
(``center_wraparound``); layers are chosen by the Gopher mapping
``src_layer = round(i * L_src / L_target)`` (Python's ``round``, clamped to the last layer).

Modes, per dimension of size ``s`` (source) grown to ``t`` (target), offset ``o = (t - s) // 2``:

* ``center_wraparound``: target index ``j`` holds source index ``(j - o) mod s``;
* ``center``: ``[o, o + s)`` holds the source, everything else keeps the target's fresh init;
* ``edge``: target index ``j`` holds source index ``j mod s`` (the source repeated from 0).

Fused matrices are viewed as their parts before tiling so each part is tiled on its own: ``Wqkv``
as (Q/K/V, head, head_dim, in) so heads stay whole, attention ``Wo`` as (out, head, head_dim), the
GLU's ``Wi`` as (input/gate, intermediate, in).  Equal sizes give the identity.

``rescale`` (copy modes only): copying an input dimension k times makes every linear layer sum k
copies of each input, so the grown model's activations and logits grow with the width (a tiled
tiny model scored worse than a fresh init on held-out text).  With ``rescale`` every weight is
divided, along its input dimensions, by how often that input was copied, and the norm in front of
a tied decoder likewise, so each layer computes what the source did.  For a width that is a whole
multiple of the source's, an unchanged head size and the same depth the grown model gives the
source's logits exactly; otherwise (ModernBERT's 768 -> 1024, or added layers) it is close.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from flexbert.errors import FlexBertError

MODES = ("center_wraparound", "center", "edge")
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class TilingError(FlexBertError, ValueError):
    """A source/target pair that cannot be tiled; the message is one line."""


def gopher_layer_map(n_src: int, n_tgt: int) -> list[int]:
    """Source layer for every target layer: ``round(i * n_src / n_tgt)``, at most ``n_src - 1``."""
    return [min(round(i * n_src / n_tgt), n_src - 1) for i in range(n_tgt)]


def index_map(s: int, t: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(source index, is-centre-block) for each of the ``t`` target positions of one dimension."""
    if t < s:
        raise TilingError(f"cannot tile a dimension of {s} into {t} (the target must not be smaller)")
    j = torch.arange(t)
    o = (t - s) // 2
    if mode == "edge":
        return j % s, j < s
    if mode in ("center_wraparound", "center"):
        return (j - o) % s, (j >= o) & (j < o + s)
    raise TilingError(f"tiling mode '{mode}' is unknown; valid: {', '.join(MODES)}")


def tile_tensor(src: torch.Tensor, init: torch.Tensor, mode: str) -> torch.Tensor:
    """``src`` tiled to ``init``'s shape (both already viewed as their parts, same rank)."""
    if src.dim() != init.dim():
        raise TilingError(f"cannot tile a {tuple(src.shape)} tensor into {tuple(init.shape)}")
    out = src
    keep = torch.ones((), dtype=torch.bool)
    for d, (s, t) in enumerate(zip(src.shape, init.shape)):
        idx, centre = index_map(s, t, mode)
        out = out.index_select(d, idx)
        shape = [1] * src.dim()
        shape[d] = t
        keep = keep & centre.view(shape)
    if mode == "center":
        out = torch.where(keep, out, init.to(out.dtype))
    return out.to(init.dtype).contiguous()


def _views(cfg) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Suffix -> how to view that tensor as its parts for ``cfg`` (default: as it is)."""
    nh, hd = cfg.num_attention_heads, cfg.head_dim
    glu = cfg.mlp == "glu"
    return {
        "attn.Wqkv.weight": lambda w: w.view(3, nh, hd, w.shape[-1]),
        "attn.Wqkv.bias": lambda b: b.view(3, nh, hd),
        "attn.Wo.weight": lambda w: w.view(w.shape[0], nh, hd),
        "mlp.Wi.weight": (lambda w: w.view(2, w.shape[0] // 2, w.shape[1])) if glu else (lambda w: w),
        "mlp.Wi.bias": (lambda b: b.view(2, b.shape[0] // 2)) if glu else (lambda b: b),
    }


def _view(name: str, tensor: torch.Tensor, cfg) -> torch.Tensor:
    for suffix, fn in _views(cfg).items():
        if name.endswith(suffix):
            return fn(tensor)
    return tensor


def check_compatible(src_cfg, tgt_cfg) -> None:
    """One-line TilingError for pairs tiling cannot handle."""
    if src_cfg.vocab_size != tgt_cfg.vocab_size:
        raise TilingError(f"model.vocab_size: source has {src_cfg.vocab_size}, target {tgt_cfg.vocab_size}; "
                          "tiling keeps the vocabulary (use the same tokenizer)")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        s, t = getattr(src_cfg, key), getattr(tgt_cfg, key)
        if t < s:
            raise TilingError(f"model.{key}: target {t} is smaller than the source's {s}; tiling only grows a model")
    if tgt_cfg.head_dim % src_cfg.head_dim:
        raise TilingError(f"model.num_attention_heads: target head size {tgt_cfg.head_dim} is not a multiple of the "
                          f"source's {src_cfg.head_dim}; heads are tiled whole")
    for key in ("mlp", "embedding"):
        if getattr(src_cfg, key) != getattr(tgt_cfg, key):
            raise TilingError(f"model.{key}: source '{getattr(src_cfg, key)}' differs from target '{getattr(tgt_cfg, key)}'")


# viewed dimensions that are inputs of the layer (summed over by its matmul), per suffix
_INPUT_DIMS = {"attn.Wqkv.weight": (3,), "attn.Wo.weight": (1, 2), "mlp.Wi.weight": (-1,), "mlp.Wo.weight": (1,),
               "head.dense.weight": (1,)}


def copy_counts(s: int, t: int, mode: str) -> torch.Tensor:
    """How many target positions hold the source index of each of the ``t`` target positions."""
    idx, _ = index_map(s, t, mode)
    return torch.bincount(idx, minlength=s)[idx]


def _rescale(name: str, tiled: torch.Tensor, src_shape, cfg, mode: str) -> torch.Tensor:
    """``tiled`` (viewed) divided by the copy count of its inputs; see the module docstring."""
    dims = next((d for suffix, d in _INPUT_DIMS.items() if name.endswith(suffix)), None)
    if dims is None and name.startswith("head.norm.") and cfg.tie_word_embeddings:
        dims = (0,)  # feeds the tied decoder, whose input side is the (unscaled) embedding matrix
    if dims is None and name == "decoder.weight" and not cfg.tie_word_embeddings:
        dims = (1,)
    if dims is None:
        return tiled
    scale = torch.ones((), dtype=torch.float64)
    for d in dims:
        d = d % tiled.dim()
        shape = [1] * tiled.dim()
        shape[d] = tiled.shape[d]
        scale = scale * copy_counts(src_shape[d], tiled.shape[d], mode).to(torch.float64).view(shape)
    return (tiled.double() / scale).to(tiled.dtype)


def tile_state_dict(src_sd: dict, src_cfg, tgt_sd: dict, tgt_cfg, mode: str = "center_wraparound",
                    rescale: bool = False) -> dict:
    """Target state dict: every tensor of ``tgt_sd`` (the fresh init) filled from ``src_sd``.

    Target tensors with no source counterpart (a deeper layer 0 mapped onto a layer that has no
    ``attn_norm``) keep their init; that init is the identity norm the source layer behaves as.
    """
    if mode not in MODES:
        raise TilingError(f"tiling mode '{mode}' is unknown; valid: {', '.join(MODES)}")
    if rescale and mode == "center":
        raise TilingError("rescale applies to the copying modes (center_wraparound, edge), not center")
    check_compatible(src_cfg, tgt_cfg)
    layer_of = gopher_layer_map(src_cfg.num_hidden_layers, tgt_cfg.num_hidden_layers)
    out = {}
    for name, init in tgt_sd.items():
        m = _LAYER_RE.match(name)
        src_name = f"model.layers.{layer_of[int(m.group(1))]}.{m.group(2)}" if m else name
        if src_name not in src_sd:
            out[name] = init.clone()
            continue
        src = _view(src_name, src_sd[src_name], src_cfg)
        tiled = tile_tensor(src, _view(name, init, tgt_cfg), mode)
        if rescale:
            tiled = _rescale(name, tiled, src.shape, tgt_cfg, mode)
        out[name] = tiled.reshape(init.shape)
    return out


def tile_model(src_model, tgt_model, mode: str = "center_wraparound", rescale: bool = False):
    """Load ``tgt_model`` (a freshly initialised FlexBertForMaskedLM) with ``src_model`` tiled into it."""
    sd = tile_state_dict(src_model.state_dict(), src_model.config, tgt_model.state_dict(), tgt_model.config, mode,
                         rescale)
    tgt_model.load_state_dict(sd)
    if hasattr(tgt_model, "tie_weights"):
        tgt_model.tie_weights()
    return tgt_model
