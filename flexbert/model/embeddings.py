"""Token embeddings.  Inputs are unpadded: ``input_ids (T,)`` and per-document ``positions (T,)``."""

from __future__ import annotations

import torch
from torch import nn

from flexbert.model.norms import build_norm
from flexbert.model.registries import EMBEDDINGS


def _token_embedding(config) -> nn.Embedding:
    # padding_idx keeps the pad row out of the gradient, as transformers' ModernBERT does.
    pad = config.pad_token_id if 0 <= config.pad_token_id < config.vocab_size else None
    return nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=pad)


@EMBEDDINGS.register("sans_pos")
class SansPositionEmbeddings(nn.Module):
    """tok_embeddings -> norm -> dropout; positions come from RoPE inside attention."""

    def __init__(self, config):
        super().__init__()
        self.tok_embeddings = _token_embedding(config)
        self.norm = build_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


@EMBEDDINGS.register("absolute_pos")
class AbsolutePositionEmbeddings(nn.Module):
    """BERT style: tok_embeddings + learned position_embeddings (positions restart per document)."""

    def __init__(self, config):
        super().__init__()
        self.tok_embeddings = _token_embedding(config)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = build_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(input_ids) + self.position_embeddings(positions)
        return self.drop(self.norm(h))


def build_embeddings(config) -> nn.Module:
    return EMBEDDINGS.get(config.embedding, "embedding")(config)
