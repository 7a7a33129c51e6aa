"""Peak GPU memory of a training run on one GPU, estimated from its config (no GPU needed).

``estimate_peak(cfg)`` returns a ``MemoryEstimate`` in GiB (2**30 bytes, the unit of the run's
``memory/max_allocated_gb`` metric).  The model, per GPU, with bf16 autocast over fp32 weights:

* **fixed**: 16 bytes per parameter (fp32 weights 4, fp32 grads 4, StableAdamW's two fp32
  moments 8) + 2 bytes per matmul weight (autocast's bf16 copies, cached for the step) + 0.2 GiB
  of small per-step tensors (RoPE tables, cu_seqlens, optimizer scratch);
* **activations** saved for backward, per token and layer: ``a_H * hidden + 8 * intermediate +
  4 * heads`` bytes.  ``8 * intermediate`` is the GLU MLP in bf16 (Wi output 2 x I, GELU output
  and product I each, 2 bytes); ``4 * heads`` the attention kernel's fp32 log-sum-exp (flash-style
  kernels keep no score matrix, so memory is linear in tokens at any sequence length);
  ``a_H`` covers the fp32 residual stream the norms keep, the bf16 casts the matmuls keep,
  Q/K/V, RoPE intermediates and the dropout mask: 27 in eager mode, 22.5 compiled (fusion drops
  the RoPE and GELU temporaries);
* **MLM head**, per predicted token (the masked share of the row with sparse prediction):
  ``plain`` keeps full logits: bf16 logits (2 B/vocab entry), their fp32 log-softmax (4), its
  fp32 gradient (4) and the training metrics' reference to the previous microbatch's bf16 logits
  (2) = 12 bytes per vocabulary entry; with ``compile: model`` the cross-entropy fuses and 6
  remain.  ``lean`` (a chunked or fused linear cross-entropy; any ``model.mlm_loss`` other than
  ``plain``) keeps only the head's hidden state and its gradient (6 bytes x hidden) plus a fixed
  workspace of three 128 MiB logit chunks;
* **process** = allocated peak + allocator slack (10% of activations and head: blocks freed
  between microbatches of different masked counts fragment the cache) + 0.6 GiB CUDA context.
  ``fits`` compares the process figure with a GPU's memory less the headroom.

Where the coefficients come from: the structure (which tensors live at the start of backward) is
read off the model's code; ``a_H`` per compile mode and the head's 12/6 bytes are calibrated on
the H100 runs of 2026-11-23 (facts §6: compile none 32 rows 28.5 GiB, blocks 32 rows 26.0, blocks
64 rows 49.3, model 64 rows 43.7).  Two more measurements were not used in fitting and check
it: the context-extension run (9 x 8192, blocks, 55.2 GiB) and the out-of-memory failure of
96 x 1024 (tests/test_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from flexbert.env import dist_env
from flexbert.model.model import checkpointed_layers

GIB = 2**30
H100_80GB_BYTES = 81559 * 2**20  # what nvidia-smi reports for an H100 80GB HBM3 (79.65 GiB)
HEADROOM = 0.10  # shipped configs keep 10% of the GPU free

OPTIM_BYTES_PER_PARAM = 16  # fp32 weight + grad + two fp32 StableAdamW moments
CAST_BYTES_PER_MATMUL_PARAM = 2  # autocast's bf16 weight copies
OTHER_FIXED_BYTES = 0.2 * GIB
A_H = {"none": 27.0, "blocks": 22.5, "model": 22.5}  # bytes per hidden unit per token and layer
A_I = 8.0  # bytes per GLU intermediate unit per token and layer (bf16 Wi out x2, GELU, product)
HEAD_PLAIN_BYTES_PER_VOCAB = {"none": 12.0, "blocks": 12.0, "model": 6.0}
LEAN_BYTES_PER_HIDDEN = 6.0
LEAN_WORKSPACE_BYTES = 3 * 128 * 2**20
ALLOCATOR_SLACK = 0.10
CUDA_CONTEXT_BYTES = 0.6 * GIB


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per GPU; ``allocated`` compares with ``memory/max_allocated_gb``."""

    weights_and_optimizer: float
    activations: float
    head: float
    slack: float
    context: float

    @property
    def allocated(self) -> float:
        return self.weights_and_optimizer + self.activations + self.head

    @property
    def process(self) -> float:
        return self.allocated + self.slack + self.context

    def fits(self, gpu_bytes: int = H100_80GB_BYTES, headroom: float = HEADROOM) -> bool:
        return self.process <= (1.0 - headroom) * gpu_bytes / GIB


CHECKPOINTED_BYTES_PER_HIDDEN = 4  # a checkpointed block's saved input: the fp32 residual stream


def count_params(model_cfg) -> tuple[int, int]:
    """(all parameters, matmul weights) of the MLM model, decoder tied to the embeddings."""
    h, i, v, n = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.vocab_size, model_cfg.num_hidden_layers
    glu = 2 if getattr(model_cfg, "mlp", "glu") == "glu" else 1
    layer = 4 * h * h + glu * i * h + i * h
    matmul = n * layer + h * h + v * h  # blocks, head.dense, embeddings (= decoder)
    small = v + (2 * n + 3) * h * 2  # decoder bias, norms (weight and bias at most)
    return matmul + small, matmul


def lean_head(model_cfg) -> bool:
    return getattr(model_cfg, "mlm_loss", "plain") != "plain"


def sharded_state_bytes(model_cfg, params: int, shards: int) -> float:
    """Weights, gradients and moments with ``parallelism: fsdp`` over ``shards`` ranks: each rank
    keeps 1/shards of them, plus, unsharded in fp32, the root unit's weights and gradients
    (embeddings = decoder, head) and two blocks' (the one computing and the one prefetched).
    Not yet measured on a GPU."""
    n = model_cfg.num_hidden_layers
    _, matmul = count_params(model_cfg)
    block = (matmul - model_cfg.vocab_size * model_cfg.hidden_size - model_cfg.hidden_size ** 2) / n
    root = params - n * block
    return params * OPTIM_BYTES_PER_PARAM / shards + 8 * (root + min(2, n) * block)


def estimate_peak(model_cfg, row_tokens: int, compile: str = "none", mask_rate: float = 0.30,
                  lean: bool | None = None, checkpointed: int = 0, shards: int = 1) -> MemoryEstimate:
    """Peak memory of a training step over rows of ``row_tokens`` tokens (see the module doc);
    ``shards``: the ranks FSDP shards over (1: DDP or one GPU)."""
    if compile not in A_H:
        raise ValueError(f"compile: unknown value '{compile}'; valid choices: {', '.join(A_H)}")
    lean = lean_head(model_cfg) if lean is None else lean
    params, matmul = count_params(model_cfg)
    state = params * OPTIM_BYTES_PER_PARAM if shards <= 1 else sharded_state_bytes(model_cfg, params, shards)
    fixed = state + matmul * CAST_BYTES_PER_MATMUL_PARAM + OTHER_FIXED_BYTES
    per_layer = A_H[compile] * model_cfg.hidden_size + A_I * model_cfg.intermediate_size + 4 * model_cfg.num_attention_heads
    # a checkpointed block keeps only its fp32 input; during its backward one block's activations
    # are recomputed and alive again
    n = model_cfg.num_hidden_layers
    kept = (n - checkpointed) * per_layer + checkpointed * CHECKPOINTED_BYTES_PER_HIDDEN * model_cfg.hidden_size
    acts = row_tokens * (kept + (per_layer if checkpointed else 0))
    predicted = row_tokens * (mask_rate if getattr(model_cfg, "sparse_prediction", True) else 1.0)
    if lean:
        head = predicted * LEAN_BYTES_PER_HIDDEN * model_cfg.hidden_size + LEAN_WORKSPACE_BYTES
    else:
        head = predicted * model_cfg.vocab_size * HEAD_PLAIN_BYTES_PER_VOCAB[compile]
    return MemoryEstimate(fixed / GIB, acts / GIB, head / GIB, ALLOCATOR_SLACK * (acts + head) / GIB, CUDA_CONTEXT_BYTES / GIB)


def estimate_run(cfg, microbatch_size: int | None = None) -> MemoryEstimate:
    """The estimate for a ``RunConfig`` at its (or the given) microbatch size."""
    data = cfg.data
    mb = microbatch_size if microbatch_size is not None else data.microbatch_size
    if not isinstance(mb, int):
        raise ValueError(f"data.microbatch_size: '{mb}' is not a number; resolve it first (flexbert/train/microbatch.py)")
    n_ckpt = len(checkpointed_layers(cfg.activation_checkpointing, cfg.model.num_hidden_layers))
    return estimate_peak(cfg.model, mb * data.max_seq_len, cfg.compile, cfg.max_predicted_fraction(), checkpointed=n_ckpt,
                         shards=fsdp_shards(cfg))


def fsdp_shards(cfg) -> int:
    """How many ranks hold one copy of the state: the world (``fsdp.sharding: full``) or one node
    (``hybrid``) with ``parallelism: fsdp``, else 1."""
    if getattr(cfg, "parallelism", "ddp") != "fsdp":
        return 1
    env = dist_env()
    return env.ranks_per_node() if cfg.fsdp.sharding == "hybrid" else env.world_size


def largest_fitting(model_cfg, max_seq_len: int, candidates, compile: str = "none", mask_rate: float = 0.30,
                    gpu_bytes: int = H100_80GB_BYTES, headroom: float = HEADROOM, lean: bool | None = None,
                    checkpointed: int = 0) -> int | None:
    """The largest candidate microbatch whose estimate fits, or None."""
    ok = [c for c in candidates
          if estimate_peak(model_cfg, c * max_seq_len, compile, mask_rate, lean, checkpointed).fits(gpu_bytes, headroom)]
    return max(ok) if ok else None
