"""The MLM / CLM loss: decoder (tied weight + bias) and cross-entropy, without full fp32 logits.

At the recipe's size a row predicts ~30K tokens over a 50,368-token vocabulary: their fp32 logits
alone are 5.5 GiB, and the plain path keeps several tensors of that size alive (logits, their fp32
copy, the softmax saved for backward, the gradient).  The implementations here return *sums*
(loss, correct argmax predictions, predicted tokens) computed in the same pass, so no logits
outlive the loss and the training / eval metrics are counts (docs/model.md):

* ``chunked`` -- pure torch, any device: chunks of predicted tokens; forward keeps only the
  log-sum-exp per token, backward recomputes each chunk's logits;
* ``liger`` -- liger-kernel's fused linear cross-entropy (CUDA, Triton; ``pip install
  'flexbert[liger]'``);
* ``plain`` -- full logits then ``F.cross_entropy`` (the definition; what HF-style callers get);
* ``auto`` -- on CUDA ``liger`` when it is installed and gradients are wanted, else ``chunked``;
  elsewhere ``plain`` (host memory is not the limit of a CPU-sized run, and ``chunked`` pays one
  more decoder matmul: 12% slower in ``scripts/bench_model.py``'s small config on CPU).

Every path here reads the label no loss counts from one place, ``ignore_index()`` (which reads
``flexbert.config.IGNORE_INDEX`` at call time); the model's gather of labelled positions asks it
too.  ``logits_loss`` is the definition on full logits (what HF-style callers get) and
``token_losses`` the per-token loss and hit of ``chunked`` (the by-length evaluation's primitive).
The labels say what is predicted -- MLM's masked tokens or CLM's next tokens -- so the same paths
serve both objectives.

``plain`` and ``chunked`` trace into a compiled model's graph (``compile: model`` is one graph from
the embeddings to the loss sums); ``liger`` is a Triton kernel that syncs with the host and stays
a separate call (one graph break, no recompilation).
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

import flexbert.config as flexbert_config
from flexbert.config import ConfigError
from flexbert.model.registries import MLM_LOSSES

# fp32 elements of one chunk's logits (32 Mi = 128 MiB); the chunk is at least 64 tokens.
CHUNK_ELEMENTS = 1 << 25


def ignore_index() -> int:
    """The label of positions no loss counts (``flexbert.config.IGNORE_INDEX``, read now)."""
    return flexbert_config.IGNORE_INDEX


@dataclass
class LossStats:
    """Sums over the predicted positions (labels != ignore_index()) of one forward."""

    loss_sum: torch.Tensor  # fp32 scalar, differentiable
    correct: torch.Tensor  # long scalar: argmax == label
    count: torch.Tensor  # long scalar: predicted positions

    @property
    def loss(self) -> torch.Tensor:
        """Mean cross-entropy over predicted positions (0 when there are none)."""
        return self.loss_sum / self.count.clamp(min=1)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in here: autocast's if it is on, else the tensor's own."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def chunk_rows(vocab: int) -> int:
    return max(64, CHUNK_ELEMENTS // max(1, vocab) // 64 * 64)


def _cast(weight, bias, dtype):
    return weight.to(dtype), None if bias is None else bias.to(dtype)


def _chunk_ce(h, w, b, labels, ignore: int):
    """One chunk: per-row cross-entropy of fp32 ``h @ w.T + b`` (0 on ignored rows), argmax hit
    (False on ignored rows), and the log-sum-exp backward needs."""
    logits = F.linear(h.to(w.dtype), w, b).float()
    valid = labels != ignore
    lse = torch.logsumexp(logits, dim=-1)
    target = logits.gather(1, torch.where(valid, labels, 0)[:, None])[:, 0]
    return torch.where(valid, lse - target, 0.0), (logits.argmax(-1) == labels) & valid, lse


class _ChunkedLinearCE(torch.autograd.Function):
    """sum CE(h @ W.T + b, labels) over labelled rows, with argmax hits; logits live per chunk."""

    @staticmethod
    def forward(ctx, h, weight, bias, labels, dtype, chunk, ignore):
        loss_sum = torch.zeros((), device=h.device, dtype=torch.float32)
        correct = torch.zeros((), device=h.device, dtype=torch.long)
        lse = torch.empty(h.shape[0], device=h.device, dtype=torch.float32)
        w, b = _cast(weight, bias, dtype)
        for s in range(0, h.shape[0], chunk):
            loss, hit, chunk_lse = _chunk_ce(h[s : s + chunk], w, b, labels[s : s + chunk], ignore)
            lse[s : s + chunk] = chunk_lse
            loss_sum += loss.sum()
            correct += hit.sum()
        ctx.save_for_backward(h, weight, bias, labels, lse)
        ctx.dtype, ctx.chunk, ctx.ignore = dtype, chunk, ignore
        ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        h, weight, bias, labels, lse = ctx.saved_tensors
        dtype, chunk = ctx.dtype, ctx.chunk
        w, b = _cast(weight, bias, dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
        grad_b = None if bias is None else torch.zeros(bias.shape, device=bias.device, dtype=torch.float32)
        for s in range(0, h.shape[0], chunk):
            hc = h[s : s + chunk].to(dtype)
            lab = labels[s : s + chunk]
            valid = lab != ctx.ignore
            # d(lse - logit[label]) / d logits = softmax - onehot, zero on unlabelled rows
            g = torch.exp(F.linear(hc, w, b).float() - lse[s : s + chunk, None])
            g[torch.arange(lab.numel(), device=g.device), torch.where(valid, lab, 0)] -= 1.0
            g = g.mul_(torch.where(valid, grad_loss, 0.0)[:, None])
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(dtype)
            grad_h[s : s + chunk] = (g @ w).to(h.dtype)
            grad_w += (g.t() @ hc).float()
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, grad_w.to(weight.dtype), grad_b, None, None, None, None


def _count(labels: torch.Tensor) -> torch.Tensor:
    return (labels != ignore_index()).sum()


@MLM_LOSSES.register("chunked")
def chunked_loss(h, weight, bias, labels, chunk: Optional[int] = None) -> LossStats:
    dtype, chunk = compute_dtype(h), chunk or chunk_rows(weight.shape[0])
    with torch.autocast(h.device.type, enabled=False):
        loss_sum, correct = _ChunkedLinearCE.apply(h, weight, bias, labels, dtype, chunk, ignore_index())
    return LossStats(loss_sum, correct, _count(labels))


def token_losses(h, weight, bias, labels, chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``h``: fp32 cross-entropy of decoder(h) = ``h @ weight.T + bias`` against its
    label and whether the argmax hits it (0 and False where the label is ``ignore_index()``),
    computed in chunks as ``chunked`` does (no full logits).  Pass the labelled rows only to skip
    the decoder work on the others; sums equal ``chunked``'s loss_sum and correct."""
    dtype, chunk, ignore = compute_dtype(h), chunk or chunk_rows(weight.shape[0]), ignore_index()
    losses, hits = [], []
    with torch.autocast(h.device.type, enabled=False):
        w, b = _cast(weight, bias, dtype)
        for s in range(0, h.shape[0], chunk):
            loss, hit, _ = _chunk_ce(h[s : s + chunk], w, b, labels[s : s + chunk], ignore)
            losses.append(loss)
            hits.append(hit)
    if not losses:  # no rows
        return h.new_zeros(0, dtype=torch.float32), torch.zeros(0, dtype=torch.bool, device=h.device)
    return torch.cat(losses), torch.cat(hits)


def logits_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossStats:
    """The definition, on full logits ``(..., vocab)``: fp32 cross-entropy sums over labelled positions."""
    logits, labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
    ignore = ignore_index()
    loss_sum = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & (labels != ignore)).sum()
    return LossStats(loss_sum, correct, _count(labels))


@MLM_LOSSES.register("plain")
def plain_loss(h, weight, bias, labels) -> LossStats:
    """Full logits, then ``logits_loss`` (memory grows with tokens x vocabulary)."""
    return logits_loss(F.linear(h, weight, bias), labels)


_LIGER = importlib.util.find_spec("liger_kernel") is not None  # looked up once: a constant when traced


def liger_available() -> bool:
    return _LIGER


def require_liger() -> None:
    """One line when ``mlm_loss: liger`` was asked for and liger-kernel is absent."""
    if not liger_available():
        raise ConfigError("model.mlm_loss: liger needs liger-kernel, which is not installed (pip install 'flexbert[liger]')")


@MLM_LOSSES.register("liger")
@torch.compiler.disable  # a Triton kernel with host syncs: called as is from a compiled model
def liger_loss(h, weight, bias, labels) -> LossStats:
    require_liger()
    if h.device.type != "cuda":
        raise RuntimeError(f"model.mlm_loss: liger runs on CUDA only, not {h.device.type}; use chunked or auto")
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy as flce

    dtype = compute_dtype(h)
    params = inspect.signature(flce).parameters
    with_acc = "return_token_accuracy" in params
    kwargs = dict(return_token_accuracy=True) if with_acc else {}
    if "accum_dtype" in params:  # accumulate the weight gradient in fp32, as the plain path does
        kwargs["accum_dtype"] = torch.float32
    with torch.autocast("cuda", enabled=False):
        hc, w = h.to(dtype).contiguous(), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        out = flce(hc, w, labels, b, ignore_index=ignore_index(), reduction="sum", **kwargs)
        loss_sum = (out.loss if with_acc else (out[0] if isinstance(out, tuple) else out)).float()
        count = _count(labels)
        if with_acc:  # liger's accuracy is a fraction of the labelled rows (NaN when there are none)
            correct = (torch.nan_to_num(out.token_accuracy.detach().double(), nan=0.0) * count).round().long()
        else:  # older liger: one no-grad chunked pass for the argmax hits
            with torch.no_grad():
                correct = _ChunkedLinearCE.apply(hc, w, b, labels, dtype, chunk_rows(w.shape[0]), ignore_index())[1]
    return LossStats(loss_sum, correct, count)


@MLM_LOSSES.register("auto")
def auto_loss(h, weight, bias, labels) -> LossStats:
    if h.device.type != "cuda":
        return plain_loss(h, weight, bias, labels)
    if torch.is_grad_enabled() and liger_available():
        return liger_loss(h, weight, bias, labels)
    return chunked_loss(h, weight, bias, labels)


def mlm_loss(name: str, h, weight, bias, labels) -> LossStats:
    """Loss sums of decoder(h) against ``labels`` with the implementation ``name``.

    ``liger`` without gradients falls back to ``chunked`` (so does ``auto`` on CUDA): liger
    computes gradients inside its forward, wasted work in evaluation."""
    if name == "liger" and not torch.is_grad_enabled():
        name = "chunked"
    return MLM_LOSSES.get(name, "mlm_loss")(h, weight, bias, labels)


def _kl_chunk(hs, ws, bs, ht, wt, bt, valid, temperature: float):
    """sum over ``valid`` rows of KL(softmax(t / T) || softmax(s / T)), fp32 logits of this chunk only."""
    student = F.log_softmax(F.linear(hs, ws, bs).float() / temperature, dim=-1)
    with torch.no_grad():
        teacher = F.log_softmax(F.linear(ht, wt, bt).float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return torch.where(valid, kl, 0.0).sum()


def distill_kl(h, weight, bias, teacher_h, teacher_weight, teacher_bias, labels, temperature: float = 1.0,
               chunk: Optional[int] = None) -> torch.Tensor:
    """Distillation: the sum over labelled rows of KL(teacher || student) between the decoders'
    distributions at ``temperature`` (student: ``h @ weight.T + bias``, differentiable; teacher: its
    own head output and decoder, no gradient).  Computed in chunks whose logits are recomputed in
    backward (activation checkpointing), so no full-vocabulary logits outlive a chunk."""
    chunk = chunk or chunk_rows(weight.shape[0])
    valid = labels != ignore_index()
    teacher_h = teacher_h.detach().to(h.dtype)
    total = h.new_zeros((), dtype=torch.float32)
    for s in range(0, h.shape[0], chunk):
        part = slice(s, s + chunk)
        total = total + torch.utils.checkpoint.checkpoint(
            _kl_chunk, h[part], weight, bias, teacher_h[part], teacher_weight, teacher_bias, valid[part], temperature,
            use_reentrant=False)
    return total
