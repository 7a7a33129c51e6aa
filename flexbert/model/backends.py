"""Attention kernels behind one signature.

Every backend works on *unpadded* tokens: ``q, k, v`` of shape ``(T, heads, head_dim)`` with the
document boundaries in ``batch.cu_seqlens`` / ``batch.max_seqlen``, and a ``window`` that is either
``None`` (global attention) or ``(left, right)``: query ``i`` sees key ``j`` of the same document iff
``i - left <= j <= i + right`` (ModernBERT's local layers use ``(w // 2, w // 2)``).

The causal contract (CLM, ``batch.causal``, a Python bool set once per forward by the caller's
``causal=`` argument): every backend then lets query ``i`` see key ``j`` of the same document iff
``j <= i`` (global layers) or ``i - left <= j <= i`` (local layers: the window's left side only).
``sdpa_layout.reach(window, causal)`` is the one statement of that rule; each backend translates it
(masks for ``sdpa`` and ``flex``, ``window_size=(left or -1, 0)`` for the FlashAttention kernels).
Layers pass their own window unchanged, so nothing per layer depends on the objective.

A backend has two steps, so that per-batch work is done once and shared by every layer:

* ``prepare(batch, windows)`` -- once per forward, in the encoder: build whatever the kernel needs
  (gather/scatter indices and masks for ``sdpa``, block masks for ``flex``); stored on ``batch``.
* ``__call__(q, k, v, batch, window, dropout_p, scale)`` -- per layer; no host syncs.

Backends: ``sdpa`` (exact reference, any device/dtype), ``flex`` (FlexAttention, CUDA), ``varlen``
(torch's own FlashAttention-2 varlen kernel, CUDA fp16/bf16), ``flash_attn`` (the flash-attn
package), and ``auto`` (best available for the device and dtype, decided at run time).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any, Optional

import torch

from flexbert.errors import FlexBertError
from flexbert.model import sdpa_layout
from flexbert.model.registries import ATTENTION_BACKENDS
from flexbert.model.sdpa_layout import Window, first_fit_rows, reach  # noqa: F401 (re-exported)


class BackendUnavailable(FlexBertError, RuntimeError):
    """The chosen attention backend cannot run on this device / dtype / install."""


class AttentionBackend:
    name = "base"

    @classmethod
    def why_unavailable(cls, device: torch.device, dtype: torch.dtype) -> Optional[str]:
        """None if usable for tensors on ``device`` with ``dtype``, else the reason."""
        return None

    def prepare(self, batch, windows: list[Window]) -> Any:
        return None

    def __call__(self, q, k, v, batch, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------------------- sdpa
@ATTENTION_BACKENDS.register("sdpa")
class SDPABackend(AttentionBackend):
    """Reference path: regroup tokens by document, run torch SDPA, scatter back.

    Memory and compute follow the documents, never a dense ``(T, T)`` mask over the packed row.
    The layouts (flexbert/model/sdpa_layout.py): a grid of one document per row (any device, no
    sync), documents packed first-fit into grid rows (CPU, fewer padded slots), and, for static
    batches (compiled models), fixed query blocks that see every key a document can reach.
    """

    name = "sdpa"

    def __init__(self, pack_rows: bool = True):
        self.pack_rows = pack_rows

    def prepare(self, batch, windows: list[Window]) -> dict:
        if batch.static:
            return sdpa_layout.block_layout(batch, windows)
        return sdpa_layout.grid_layout(batch, windows, self.pack_rows)

    def __call__(self, q, k, v, batch, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
        attend = sdpa_layout.block_attention if batch.attn["kind"] == "blocks" else sdpa_layout.grid_attention
        return attend(q, k, v, batch.attn, window, dropout_p, scale)


# --------------------------------------------------------------------------------------- flex
@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=None)
def _block_mask_kwargs() -> tuple:
    from torch.nn.attention.flex_attention import create_block_mask

    return (("_compile", True),) if "_compile" in inspect.signature(create_block_mask).parameters else ()


def _flex_mask_mod(doc: torch.Tensor, left: Optional[int], right: Optional[int]):
    """Same document, key within ``left`` / ``right`` of the query (None: no limit that side)."""

    def mask_mod(b, h, qi, ki):
        keep = doc[qi] == doc[ki]  # documents are contiguous: packed distance is in-document distance
        if left is not None:
            keep = keep & (ki - qi >= -left)
        if right is not None:
            keep = keep & (ki - qi <= right)
        return keep

    return mask_mod


def _flash_window(window: Window, causal: bool) -> tuple[int, int]:
    """The reach in FlashAttention's terms: -1 is no limit, ``(-1, 0)`` is causal."""
    left, right = reach(window, causal)
    return (-1 if left is None else left, -1 if right is None else right)


@ATTENTION_BACKENDS.register("flex")
class FlexBackend(AttentionBackend):
    """FlexAttention with a block-sparse (document x window) mask built once per batch."""

    name = "flex"

    def __init__(self):
        # looked up once here, not per call: a compiled model must not trace lru_cache/inspect
        self.flex = _compiled_flex()
        self.mask_kwargs = dict(_block_mask_kwargs())

    @classmethod
    def why_unavailable(cls, device, dtype):
        if device.type != "cuda":
            return "flex attention needs CUDA here (no backward on CPU)"
        if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            return "this torch has no torch.nn.attention.flex_attention"
        return None

    def prepare(self, batch, windows: list[Window]) -> dict:
        from torch.nn.attention.flex_attention import create_block_mask

        T = batch.total
        masks = {}
        for window in set(windows):
            mask_mod = _flex_mask_mod(batch.seq_ids, *reach(window, batch.causal))
            # _compile builds the block mask without materialising a dense (T, T) mask first
            masks[window] = create_block_mask(mask_mod, None, None, T, T, device=batch.seq_ids.device, **self.mask_kwargs)
        return masks

    def __call__(self, q, k, v, batch, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
        if dropout_p > 0:
            raise BackendUnavailable("flex attention has no attention-probability dropout; set attention_dropout: 0")
        qh, kh, vh = (x.transpose(0, 1)[None] for x in (q, k, v))  # (1, H, T, D)
        out = self.flex(qh, kh, vh, block_mask=batch.attn[window], scale=scale)
        return out[0].transpose(0, 1)


# ------------------------------------------------------------------------------------- varlen
@functools.lru_cache(maxsize=None)
def _public_varlen():
    """torch.nn.attention.varlen.varlen_attn if this torch has one that takes a window."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn if "window_size" in inspect.signature(varlen_attn).parameters else None


def _aten_flash_available() -> bool:
    return hasattr(torch.ops.aten, "_flash_attention_forward") and hasattr(torch.ops.aten, "_flash_attention_backward")


class _AtenFlashVarlen(torch.autograd.Function):
    """Autograd wrapper around torch's private FlashAttention-2 varlen ops (torch >= 2.5)."""

    @staticmethod
    def forward(ctx, q, k, v, cu, max_seqlen, dropout_p, scale, left, right):
        causal = left < 0 and right == 0
        out, lse, rng_state, unused, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, max_seqlen, max_seqlen, dropout_p, causal, False,
            scale=scale, window_size_left=left, window_size_right=right,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse, cu, rng_state, unused)
        ctx.args = (max_seqlen, dropout_p, causal, scale, left, right)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, cu, rng_state, unused = ctx.saved_tensors
        max_seqlen, dropout_p, causal, scale, left, right = ctx.args
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad_out.contiguous(), q, k, v, out, lse, cu, cu, max_seqlen, max_seqlen, dropout_p, causal,
            rng_state, unused, scale=scale, window_size_left=left, window_size_right=right,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None, None


@ATTENTION_BACKENDS.register("varlen")
class VarlenBackend(AttentionBackend):
    """torch's built-in variable-length FlashAttention-2 (no extra package), with windows."""

    name = "varlen"

    def __init__(self):
        self.public = _public_varlen()  # once here: a compiled model must not trace lru_cache/inspect

    @classmethod
    def why_unavailable(cls, device, dtype):
        if device.type != "cuda":
            return "varlen attention needs CUDA"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"varlen attention needs fp16/bf16, got {dtype}"
        if _public_varlen() is None and not _aten_flash_available():
            return "this torch has neither varlen_attn(window_size=) nor aten::_flash_attention_forward"
        return None

    def __call__(self, q, k, v, batch, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
        left, right = _flash_window(window, batch.causal)
        cu, L = batch.cu_seqlens, batch.max_seqlen
        public = self.public
        if public is not None and dropout_p == 0.0:
            return public(q, k, v, cu, cu, L, L, scale=scale, window_size=(left, right))
        return _AtenFlashVarlen.apply(q.contiguous(), k.contiguous(), v.contiguous(), cu, L, dropout_p, scale, left, right)


# --------------------------------------------------------------------------------- flash_attn
@ATTENTION_BACKENDS.register("flash_attn")
class FlashAttnBackend(AttentionBackend):
    """The flash-attn package's varlen kernel (``pip install flexbert[flash]``)."""

    name = "flash_attn"

    @classmethod
    def why_unavailable(cls, device, dtype):
        if importlib.util.find_spec("flash_attn") is None:
            return "the flash-attn package is not installed"
        if device.type != "cuda":
            return "flash-attn needs CUDA"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"flash-attn needs fp16/bf16, got {dtype}"
        return None

    def __init__(self):
        from flash_attn import flash_attn_varlen_func  # imported once, outside any traced code

        self.varlen_func = flash_attn_varlen_func

    def __call__(self, q, k, v, batch, window: Window, dropout_p: float, scale: float) -> torch.Tensor:
        cu, L = batch.cu_seqlens, batch.max_seqlen
        return self.varlen_func(
            q, k, v, cu, cu, L, L, dropout_p=dropout_p, softmax_scale=scale, causal=batch.causal,
            window_size=_flash_window(window, batch.causal),
        )  # fmt: skip


# --------------------------------------------------------------------------------------- auto
# Preference order for ``auto``; the first usable one wins.  flex is last among the GPU kernels
# because it compiles on first use; sdpa always works.
AUTO_ORDER = ("flash_attn", "varlen", "flex", "sdpa")


@ATTENTION_BACKENDS.register("auto")
class AutoBackend(AttentionBackend):
    """Marker: resolved by ``resolve_backend`` to the best backend for the device and dtype."""

    name = "auto"


@functools.lru_cache(maxsize=None)
def _resolve(name: str, device_type: str, dtype: torch.dtype, dropout: bool) -> AttentionBackend:
    device = torch.device(device_type)
    if name == "auto":
        for cand in AUTO_ORDER:
            cls = ATTENTION_BACKENDS.get(cand)
            if cls.why_unavailable(device, dtype) is None and not (dropout and cand == "flex"):
                return cls()
        raise AssertionError("sdpa is always available")
    cls = ATTENTION_BACKENDS.get(name, "attention_backend")
    why = cls.why_unavailable(device, dtype)
    if why is not None:
        raise BackendUnavailable(f"attention_backend '{name}' cannot run on {device_type}/{dtype}: {why}")
    return cls()


@torch.compiler.disable  # a host-side choice (imports, capability checks): never traced
def resolve_backend(name: str, device: torch.device, dtype: torch.dtype, dropout: bool = False) -> AttentionBackend:
    """The backend instance for ``name`` on this device/dtype (``auto`` picks the best usable)."""
    return _resolve(name, torch.device(device).type, dtype, dropout)


def available_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    return [n for n in AUTO_ORDER if ATTENTION_BACKENDS.get(n).why_unavailable(torch.device(device), dtype) is None]
