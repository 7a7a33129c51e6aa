"""Shrink a trained FlexBERT model: keep chosen layers, optionally narrow every MLP (the inverse of
weight tiling, flexbert/model/tiling.py).

* **Layers.** ``select_layers`` turns ``--keep 0,2,4``, ``--every 2`` (layers 0, 2, 4, ...) or
  ``--depth N`` (N layers spread evenly: ``round(i * L / N)``, the Gopher map tiling uses, so the
  first layer always stays) into the sorted source layers to keep.  Kept layers keep their kind:
  the new ``global_attn_every_n_layers`` is the ``n`` under which "layer i is global iff i % n ==
  0" gives every kept layer its old kind (``pattern_every``); when no ``n`` does, the choice is
  refused in one line.  Layer 0 must stay when it has no attention norm (``skip_first_prenorm``).
* **MLP width.** ``mlp_units`` ranks each layer's intermediate units by weight norm -- the product
  of the norms of the unit's input row, gate row (GLU) and output column -- and keeps the largest
  ``width`` in their original order; ``Wi`` (both GLU halves) and ``Wo`` are sliced to them.

Keeping every layer at full width copies every tensor: the pruned model computes exactly what the
source does.  What it loses otherwise is recovered by training on (``init_from``), with a teacher
(``teacher:``: prune, then distill; docs/training.md).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import torch

from flexbert.errors import FlexBertError
from flexbert.model.model import FlexBertForMaskedLM

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


class PruningError(FlexBertError, ValueError):
    """A pruning request the model cannot take; one line naming the option."""


def select_layers(n_layers: int, keep: Optional[Sequence[int]] = None, every: Optional[int] = None,
                  depth: Optional[int] = None) -> list[int]:
    """The source layers to keep (sorted), from exactly one of ``keep``, ``every``, ``depth``."""
    given = [name for name, v in (("--keep", keep), ("--every", every), ("--depth", depth)) if v is not None]
    if len(given) != 1:
        raise PruningError(f"give exactly one of --keep, --every, --depth (got {', '.join(given) or 'none'})")
    if keep is not None:
        bad = [i for i in keep if not 0 <= i < n_layers]
        if bad:
            raise PruningError(f"--keep: layer {bad[0]} is out of range; the model has {n_layers} layers (0..{n_layers - 1})")
        if not keep or len(set(keep)) != len(keep):
            raise PruningError(f"--keep: give each layer once, at least one, got {list(keep)}")
        return sorted(keep)
    if every is not None:
        if every < 1:
            raise PruningError(f"--every: must be >= 1, got {every}")
        return list(range(0, n_layers, every))
    if not 1 <= depth <= n_layers:
        raise PruningError(f"--depth: must be in 1..{n_layers} (the model's layers), got {depth}")
    return sorted({min(round(i * n_layers / depth), n_layers - 1) for i in range(depth)})


def pattern_every(config, layers: Sequence[int], option: str = "--keep") -> int:
    """``global_attn_every_n_layers`` that gives the kept ``layers`` their kinds (global / local)."""
    if config.local_attention == -1:
        return config.global_attn_every_n_layers  # every layer global, whatever n says
    kinds = [config.layer_is_global(i) for i in layers]
    for n in range(1, len(layers) + 1):
        if kinds == [j % n == 0 for j in range(len(layers))]:
            return n
    shown = " ".join("G" if g else "L" for g in kinds)
    raise PruningError(f"{option}: layers {list(layers)} keep the attention kinds {shown}, which no "
                       "global_attn_every_n_layers gives (layer i is global iff i % n == 0); keep the global "
                       "layers every n-th, e.g. --every with a divisor of the model's pattern")


def mlp_units(layer: torch.nn.Module, width: int, glu: bool) -> torch.Tensor:
    """The ``width`` intermediate units of ``layer.mlp`` with the largest weight norm, in order."""
    wi, wo = layer.mlp.Wi.weight, layer.mlp.Wo.weight
    size = wo.shape[1]
    score = wo.norm(dim=0) * wi[:size].norm(dim=1)
    if glu:
        score = score * wi[size:].norm(dim=1)
    return torch.topk(score, width).indices.sort().values


def _slice_mlp(name: str, t: torch.Tensor, units: torch.Tensor, size: int, glu: bool) -> torch.Tensor:
    if name.startswith("mlp.Wi."):
        rows = torch.cat([units, units + size]) if glu else units
        return t[rows]
    if name == "mlp.Wo.weight":
        return t[:, units]
    return t


def prune_model(src: FlexBertForMaskedLM, layers: Sequence[int], mlp_width: Optional[int] = None,
                option: str = "--keep") -> FlexBertForMaskedLM:
    """A new FlexBertForMaskedLM with ``layers`` of ``src`` (renumbered 0..) and MLPs ``mlp_width`` wide."""
    cfg = src.config
    if layers[0] != 0 and cfg.skip_first_prenorm and cfg.block == "prenorm":
        raise PruningError(f"{option}: keep layer 0: it has no attention norm (model.skip_first_prenorm), so another "
                           "layer cannot take its place without changing what it computes")
    width = cfg.intermediate_size if mlp_width is None else mlp_width
    if not 1 <= width <= cfg.intermediate_size:
        raise PruningError(f"--mlp-width: must be in 1..{cfg.intermediate_size} (the model's intermediate_size), got {width}")
    new_cfg = dataclasses.replace(cfg, num_hidden_layers=len(layers), intermediate_size=width,
                                  global_attn_every_n_layers=pattern_every(cfg, layers, option))
    glu = cfg.mlp == "glu"
    units = {i: mlp_units(src.model.layers[i], width, glu) for i in layers}
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, t in src.state_dict().items():
        m = _LAYER.match(key)
        if m is None:
            state[key] = t.clone()
        elif int(m.group(1)) in new_index:
            old, rest = int(m.group(1)), m.group(2)
            state[f"model.layers.{new_index[old]}.{rest}"] = _slice_mlp(rest, t, units[old], cfg.intermediate_size, glu).clone()
    out = FlexBertForMaskedLM(new_cfg)
    out.load_state_dict(state, strict=True)
    out.tie_weights()
    return out.eval()
