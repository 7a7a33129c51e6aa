"""FlexBERT encoder and its task models.

One layout inside: tokens travel unpadded, ``(T, hidden)`` with ``cu_seqlens``, from the embedding to
the head.  Two input forms (see docs/internals.md):

* packed: ``input_ids (T,)``, ``cu_seqlens (n+1,)``, ``max_seqlen`` (int) -- the data loader's rows;
* padded: ``input_ids (B, S)``, ``attention_mask (B, S)`` -- HF style; unpadded once at the
  entrance, outputs re-padded once at the exit (flexbert/model/layout.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from flexbert.model.attention import BatchInfo, batch_info, rope_tables
from flexbert.model.backends import resolve_backend
from flexbert.model.blocks import build_block
from flexbert.model.embeddings import build_embeddings
from flexbert.model.heads import PredictionHead, pool
from flexbert.model.init import init_weights
from flexbert.model.layout import Layout, make_layout
from flexbert.model.loss import LossStats, ignore_index, logits_loss, mlm_loss, require_liger, token_losses
from flexbert.model.norms import build_norm
from flexbert.model.static import gather_predicted


# ------------------------------------------------------------------------------ outputs
@dataclass
class MaskedLMOutput:
    loss: Optional[torch.Tensor]
    logits: Optional[torch.Tensor]  # None on the lean path (return_logits=False)
    labels: Optional[torch.Tensor]  # aligned with logits
    stats: Optional[LossStats] = None  # loss sum, correct predictions, predicted tokens (lean path)
    states: Optional[torch.Tensor] = None  # lean path: the head's output at the predicted positions (labels: theirs)


@dataclass
class SequenceClassifierOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (num_segments, num_labels); B for padded input


def checkpointed_layers(spec: str, n_layers: int) -> list[int]:
    """The block indices ``activation_checkpointing`` names: none | all | every_N."""
    if spec == "none":
        return []
    if spec == "all":
        return list(range(n_layers))
    n = spec[6:] if spec.startswith("every_") else ""
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"activation_checkpointing: unknown value '{spec}'; valid choices: none, all, every_N (N >= 1)")
    return list(range(0, n_layers, int(n)))


# ------------------------------------------------------------------------------ encoder
class FlexBertModel(nn.Module):
    """Embeddings -> blocks -> final norm, on unpadded tokens."""

    def __init__(self, config, init: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = build_embeddings(config)
        self.layers = nn.ModuleList(build_block(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = build_norm(config) if config.final_norm else None
        self.windows = [layer.attn.window for layer in self.layers]  # fixed at construction
        # (device type, compute dtype, dropout) -> attention backend, resolved once on the host by
        # bind_backends: a forward that finds its backend here calls no resolver, so a compiled
        # model traces embeddings to loss as one graph
        self._backends: dict = {}
        self.checkpointed: frozenset = frozenset()  # blocks whose activations are recomputed in backward
        if init:
            init_weights(self, config)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.embeddings.tok_embeddings.weight.dtype

    def bind_backends(self, device: Union[str, torch.device], dtype: torch.dtype) -> None:
        """Resolve the attention backend for ``device`` and compute ``dtype`` now (with and without
        attention dropout), so that forward does not: called once when the model is built for a
        run (flexbert/train/recipe.py), before it is compiled."""
        device_type = torch.device(device).type
        for dropout in sorted({False, self.config.attention_dropout > 0}):
            self._backends[(device_type, dtype, dropout)] = resolve_backend(self.config.attention_backend, device, dtype, dropout)

    def checkpoint_layers(self, spec: str) -> None:
        """Activation checkpointing: ``none``, ``all`` or ``every_N`` (blocks 0, N, 2N, ...) keep
        only their input for backward and recompute the rest (dropout masks included: the RNG state
        is restored), trading one more forward of those blocks for their activation memory."""
        self.checkpointed = frozenset(checkpointed_layers(spec, len(self.layers)))

    def prepare_batch(self, cu_seqlens, max_seqlen: int, total: int, static=False, causal=False) -> BatchInfo:
        """Everything per batch that layers share: positions, RoPE tables, backend + its masks."""
        cfg = self.config
        batch = batch_info(cu_seqlens, max_seqlen, total, static, causal)
        device = cu_seqlens.device
        dropout = self.training and cfg.attention_dropout > 0
        dtype = self._compute_dtype(device)
        backend = self._backends.get((device.type, dtype, dropout))
        if backend is None:  # not bound (eager use, tests): resolve here, outside any compiled graph
            backend = resolve_backend(cfg.attention_backend, device, dtype, dropout)
        batch.backend = backend
        batch.attn = batch.backend.prepare(batch, self.windows)
        batch.rope = rope_tables(cfg, batch.positions, [w is None for w in self.windows])
        return batch

    def encode(self, layout: Layout, static: bool = False, causal: bool = False) -> tuple[torch.Tensor, BatchInfo]:
        """Unpadded hidden states (T, H) and the batch facts, for heads to use (``causal``: CLM attention)."""
        ids = layout.input_ids
        batch = self.prepare_batch(layout.cu_seqlens, layout.max_seqlen, ids.shape[0], static, causal)
        h = self.embeddings(ids, batch.positions)
        recompute = self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if recompute and i in self.checkpointed:
                h = torch.utils.checkpoint.checkpoint(layer, h, batch, use_reentrant=False)
            else:
                h = layer(h, batch)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h, batch

    def forward(self, input_ids, attention_mask=None, cu_seqlens=None, max_seqlen=None, causal=False) -> torch.Tensor:
        """Last hidden states: (T, H) for packed input, (B, S, H) for padded input."""
        layout = make_layout(input_ids, attention_mask, cu_seqlens, max_seqlen)
        h, _ = self.encode(layout, causal=causal)
        return layout.repad(h)


# ------------------------------------------------------------------------------ masked LM
class FlexBertForMaskedLM(nn.Module):
    """Encoder + MLM head (dense -> act -> norm) + decoder tied to the token embeddings.

    Two ways out (docs/model.md):

    * ``return_logits=True`` (the default, transformers' behaviour): logits for every token in the
      caller's layout (only the labelled ones when training with sparse prediction) and, with
      labels, the mean cross-entropy over labelled positions;
    * ``return_logits=False`` with labels (training): no logits; ``model.mlm_loss`` computes the
      loss and the accuracy counts in one pass (``out.stats``) without full fp32 logits.
    """

    def __init__(self, config):
        super().__init__()
        if config.mlm_loss == "liger":
            require_liger()
        self.config = config
        self.model = FlexBertModel(config, init=False)
        self.head = PredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.tie_weights()
        init_weights(self, config)

    def fsdp_wrap_fn(self, module: nn.Module) -> bool:
        """Sharded data parallelism (flexbert/train/parallelism.py): each block is one FSDP unit;
        embeddings, head and the tied decoder stay in the root unit."""
        return any(module is layer for layer in self.model.layers)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        cu_seqlens: Optional[torch.Tensor] = None,
        max_seqlen: Optional[int] = None,
        labels: Optional[torch.Tensor] = None,
        return_logits: bool = True,
        static: bool = False,
        max_predictions: Optional[int] = None,
        causal: bool = False,
    ) -> MaskedLMOutput:
        """``static``: the caller padded ``cu_seqlens`` to a fixed capacity and fixed ``max_seqlen``
        (flexbert/model/static.py); ``max_predictions``: with sparse prediction, the fixed number
        of slots the labelled positions are gathered into (None: exactly the labelled ones);
        ``causal``: causal attention (CLM; labels from flexbert.data.masking.clm_labels)."""
        layout = make_layout(input_ids, attention_mask, cu_seqlens, max_seqlen)
        if labels is not None and not return_logits:
            h, flat_labels = self._predicted(layout, labels, static, max_predictions, causal)
            stats = mlm_loss(self.config.mlm_loss, h, self.decoder.weight, self.decoder.bias, flat_labels)
            return MaskedLMOutput(stats.loss, None, flat_labels, stats, h)
        h, _ = self.model.encode(layout, static, causal)
        flat_labels = layout.flatten(labels)
        if labels is not None and self.training and self.config.sparse_prediction:
            # Sparse prediction: the full-vocabulary decoder only on the ~30% masked positions.
            h, flat_labels = gather_predicted(h, flat_labels, None, ignore_index())
            logits = self.decoder(self.head(h))
            return MaskedLMOutput(logits_loss(logits, flat_labels).loss, logits, flat_labels)
        logits = self.decoder(self.head(h))
        loss = logits_loss(logits, flat_labels).loss if labels is not None else None
        return MaskedLMOutput(loss, layout.repad(logits), labels)

    def _predicted(self, layout, labels, static, max_predictions, causal, sparse=None):
        h, _ = self.model.encode(layout, static, causal)
        flat_labels = layout.flatten(labels)
        if self.config.sparse_prediction if sparse is None else sparse:
            h, flat_labels = gather_predicted(h, flat_labels, max_predictions, ignore_index())
        return self.head(h), flat_labels

    def predicted_states(self, input_ids, labels, cu_seqlens=None, max_seqlen=None, static: bool = False,
                         max_predictions: Optional[int] = None, causal: bool = False, sparse: Optional[bool] = None):
        """(the head's output before the decoder, labels) at the positions the lean path predicts:
        the labelled ones with sparse prediction (``sparse``, default the config's; gathered as
        ``forward`` gathers them, so another model called alike lines up), else every token."""
        return self._predicted(make_layout(input_ids, None, cu_seqlens, max_seqlen), labels, static, max_predictions,
                               causal, sparse)

    def token_losses(self, input_ids, labels, cu_seqlens, max_seqlen: int, causal: bool = False):
        """(per-token loss, argmax hit, position) of every labelled token of a packed row (``causal``:
        a CLM row), through the one per-token loss primitive (flexbert/model/loss.py ``token_losses``)."""
        h = self.model(input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, causal=causal)
        pos = (labels != ignore_index()).nonzero().flatten()
        loss, hit = token_losses(self.head(h[pos]), self.decoder.weight, self.decoder.bias, labels[pos])
        return loss, hit, pos


# ------------------------------------------------------------------------------ classification
class FlexBertForSequenceClassification(nn.Module):
    """Encoder -> pooling (cls | mean over real tokens) -> head -> dropout -> classifier.

    One prediction per segment: per row for padded input, per document for packed input.
    ``num_labels == 1`` is regression (MSE), otherwise single-label cross-entropy.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = FlexBertModel(config, init=False)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self, config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        cu_seqlens: Optional[torch.Tensor] = None,
        max_seqlen: Optional[int] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> SequenceClassifierOutput:
        layout = make_layout(input_ids, attention_mask, cu_seqlens, max_seqlen)
        h, batch = self.model.encode(layout)
        pooled = pool(h, batch, self.config.classifier_pooling)
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss, logits)
