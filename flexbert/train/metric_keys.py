"""The names FlexBERT's metrics are logged under: one constant each, imported by every writer
(callbacks, loggers) and every reader (console line, sweep report, averaging, GPU report, demo,
diagnosis).  A new metric is a constant here first.

The keys are Composer's where Composer writes them (``loss/train/total``, ``metrics/<label>/<name>``)
and FlexBERT's own otherwise.  A ``metrics.jsonl`` record (flexbert/train/loggers.py) holds
``kind``, ``batch``, ``tokens``, ``samples``, ``time`` and every key logged during that batch.
"""

from __future__ import annotations

# --- the record fields of metrics.jsonl
KIND, BATCH, TOKENS, SAMPLES, TIME = "kind", "batch", "tokens", "samples", "time"
KINDS = ("train", "final", "eval")  # per batch; the last batch; a closing evaluation after the last batch

# --- training loss and metrics (Composer's names)
TRAIN_LOSS = "loss/train/total"
TRAIN_ACCURACY = "metrics/train/MLMAccuracy"
EVAL_LABEL = "eval"  # the evaluator over all held-out data; "eval_<source>" per data.streams source


def eval_key(metric: str, label: str = EVAL_LABEL) -> str:
    """Composer's key of an evaluator's metric: ``metrics/<label>/<metric>``."""
    return f"metrics/{label}/{metric}"


def source_eval_label(source: str) -> str:
    return f"{EVAL_LABEL}_{source}"


EVAL_PREFIX = "metrics/eval/"
EVAL_LOSS = eval_key("MLMLoss")
EVAL_ACCURACY = eval_key("MLMAccuracy")
EVAL_PERPLEXITY = eval_key("MLMPerplexity")

# --- optimisation
LR = "lr"  # the first parameter group's


def lr_group(i: int) -> str:
    return f"lr/group{i}"


# --- data
PACKING = "data/packing_efficiency"
ROWS_PER_RANK = "data/rows_per_rank"
MASKED_FRACTION = "data/masked_fraction"
MLM_PROBABILITY = "data/mlm_probability"  # the masking rate in force (data.mlm_probability, maybe a schedule)


def source_tokens(source: str) -> str:
    """Real tokens trained on from one data.streams source so far (all ranks)."""
    return f"data/tokens/{source}"


# --- speed and memory
TOKENS_PER_SEC = "throughput/tokens_per_sec"  # all ranks
TOKENS_PER_SEC_PER_DEVICE = "throughput/tokens_per_sec_per_device"
FLOPS_PER_SEC_PER_DEVICE = "throughput/flops_per_sec_per_device"
MFU = "throughput/mfu"
MEMORY_ALLOCATED = "memory/max_allocated_gb"
MEMORY_RESERVED = "memory/reserved_gb"

# --- checkpoints
CHECKPOINT_BATCH = "checkpoint/batch"

COMPOSER_TIME_PREFIX = "time/"  # Composer's own clock keys: not written to metrics.jsonl

# Where the time went, cumulative seconds since the run (re)started, rank 0 (flexbert/train/doctor.py)
TIMING_PREFIX = "timing/"
TIMING = {part: f"{TIMING_PREFIX}{part}_s" for part in ("data", "step", "eval", "checkpoint")}

# --- distillation (flexbert/train/pretrained.py): the terms of the loss dict; Composer logs each
# entry of a loss dict as loss/train/<name> beside the total
CE_TERM, KL_TERM = "ce", "kl"
TRAIN_LOSS_CE = f"loss/train/{CE_TERM}"  # the hard-label cross-entropy (mean over predicted tokens)
TRAIN_LOSS_KL = f"loss/train/{KL_TERM}"  # KL(teacher || student) at temperature T (mean over predicted tokens)
