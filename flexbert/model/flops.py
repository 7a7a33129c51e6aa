"""Model FLOPs per token for MFU, from the config (no model instance needed).

Training FLOPs = 3 x forward (backward costs twice the forward).  Per token and layer:

* matmuls: 2 x (Wqkv + Wo + Wi + Wo_mlp) parameters, forward;
* attention scores and values: 4 x hidden x context, forward, where the context is the sequence
  length for a global layer and ``min(window + 1, seq_len)`` for a local one (a token sees
  ``|q - k| <= window // 2``);
* the MLM head (dense + tied decoder) runs on every token, or only on the masked ones with sparse
  prediction, so it is counted per *predicted* token (under ``objective: clm`` every token but
  each document's last is predicted: a predicted share of ~1.0, which the throughput callback
  reads from each batch's label count).  Causal attention is counted like bidirectional attention
  (the usual MFU convention; kernels that skip the masked half do less work than counted).

With the ModernBERT-base config at sequence 1024 and a dense head this gives 0.986 GFLOP/token,
the paper's figure (facts §3: 6 x 149M parameters + attention).
"""

from __future__ import annotations

from flexbert.model.config import FlexBertConfig


def _layer_matmul_params(cfg: FlexBertConfig) -> int:
    h, i = cfg.hidden_size, cfg.intermediate_size
    glu = 2 if cfg.mlp == "glu" else 1
    return 3 * h * h + h * h + glu * i * h + i * h


def body_flops_per_token(cfg: FlexBertConfig, seq_len: int) -> float:
    """Training FLOPs per input token of embeddings-to-final-norm (no MLM head)."""
    h = cfg.hidden_size
    total = 0.0
    for layer in range(cfg.num_hidden_layers):
        ctx = seq_len if cfg.layer_is_global(layer) else min(cfg.local_attention + 1, seq_len)
        total += 2 * _layer_matmul_params(cfg) + 4 * h * ctx
    return 3.0 * total


def head_flops_per_prediction(cfg: FlexBertConfig) -> float:
    """Training FLOPs per predicted token of the MLM head (dense + decoder)."""
    h, v = cfg.hidden_size, cfg.vocab_size
    return 3.0 * 2 * (h * h + h * v)


def flops_per_token(cfg: FlexBertConfig, seq_len: int, predicted_fraction: float | None = None) -> float:
    """Average training FLOPs per token; ``predicted_fraction``: share of tokens through the head
    (the masking rate with sparse prediction, 1.0 without or under CLM; default from
    ``cfg.sparse_prediction`` at the paper's 30% rate)."""
    if predicted_fraction is None:
        predicted_fraction = 0.3 if cfg.sparse_prediction else 1.0
    return body_flops_per_token(cfg, seq_len) + predicted_fraction * head_flops_per_prediction(cfg)


# Dense bf16 tensor-core peaks (FLOP/s) by substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (
    ("H200", 989.4e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165.2e12),
)


def peak_flops_for(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return value
    return None
