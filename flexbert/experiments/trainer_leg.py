"""The transformers side of the pretraining benchmark (flexbert/experiments/pretraining_bench.py),
run in its own process: ``python -m flexbert.experiments.trainer_leg SPEC.json``.

What a transformers user writes for the same run: ``ModernBertForMaskedLM`` built from FlexBERT's
own HF config mapping (``config_to_hf``), the token ids of the same shards (one example per document
chunk, as data_prep/tokenize_to_mds.py wrote them) padded per batch by
``DataCollatorForLanguageModeling`` at the run's masking rate, and ``Trainer`` with the run's seed,
peak LR, betas, eps, weight decay, warmup and decay shape (``trainer_schedule``).  The same tokens
per optimizer step and per forward as FlexBERT's steps and rows: ``docs_per_step`` documents of the
shards' mean length.  Differences the Trainer imposes, stated where they are made:

* AdamW (``optim="adamw_torch"``): transformers 4.53 has no StableAdamW among its ``optim`` names;
  FlexBERT's fully decoupled weight decay (``wd * lr / max_lr`` per step) becomes torch AdamW's
  ``weight_decay = wd / max_lr``, which shrinks the weights by the same amount each step;
* no gradient clipping (``max_grad_norm=0``): FlexBERT clips none either;
* no batch-size warmup (the Trainer has none); the schedule counts steps of equal token size;
* variants: ``padded`` (ModernBERT's own default, dense prediction), ``sparse``
  (``sparse_prediction=True``: decoder and loss on the masked tokens only, as FlexBERT does) and
  ``unpadded`` (``attn_implementation="flash_attention_2"``: ModernBERT unpads each padded batch
  internally; CUDA with flash-attn only).  ``DataCollatorWithFlattening`` is not a path for
  ModernBERT in 4.53: it builds causal-LM labels (no MLM masking) and its ``cu_seq_lens_q`` /
  ``position_ids`` are not arguments ModernBERT reads, so its documents would attend to each other.

Timing: ``train_seconds`` run from the Trainer's ``on_train_begin``; the pauses to save a checkpoint
(an HF folder at each mark of ``marks``) are left out, as FlexBERT's timing leaves its checkpoint
saves out.  Real (non-pad) tokens are counted from each microbatch's attention mask.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from streaming import StreamingDataset
from transformers import (AutoTokenizer, DataCollatorForLanguageModeling, ModernBertForMaskedLM, Trainer,
                          TrainerCallback, TrainingArguments)

from flexbert.config import ConfigError, parse_time
from flexbert.convert.hf_config import config_to_hf
from flexbert.data.source import resolve_source
from flexbert.train.config import load_run_config, with_data_source

VARIANTS = ("padded", "sparse", "unpadded")
_DECAY_TYPES = {"linear": "linear", "one_minus_sqrt": "1-sqrt", "cosine": "cosine"}


@dataclass
class LegSpec:
    config: str
    overrides: list[str]
    shards: str
    tokens: int
    seed: int
    out: str  # checkpoints/<tokens>/ (HF folders) and leg.json
    marks: list[int]  # token counts at which to save a checkpoint
    device: str = "cpu"
    threads: int = 1
    variant: str = "padded"
    mean_doc_tokens: float = 0.0  # of the train split (stats.json)
    extra: dict = field(default_factory=dict)


def steps_of(value: str, key: str, tokens_per_step: float, total_steps: int) -> int:
    """A FlexBERT time string as Trainer steps of ``tokens_per_step`` tokens each."""
    number, unit = parse_time(value, key)
    if unit == "tok":
        return int(round(number / tokens_per_step))
    if unit == "ba":  # a FlexBERT step holds the same tokens as a Trainer step here
        return int(number)
    if unit == "dur":
        return int(round(number * total_steps))
    raise ConfigError(f"{key}: {value!r}: the transformers Trainer side counts tok, ba or dur, not {unit}")


def trainer_schedule(scheduler: dict, tokens_per_step: float, total_steps: int) -> tuple[str, int, dict]:
    """(``lr_scheduler_type``, ``warmup_steps``, ``lr_scheduler_kwargs``) of the Trainer for a FlexBERT
    scheduler section; ConfigError (one line) for a schedule the Trainer cannot draw."""
    s = dict(scheduler or {})
    name = s.get("name", "constant_with_warmup")
    warmup = steps_of(s.get("t_warmup", "0ba"), "scheduler.t_warmup", tokens_per_step, total_steps)
    if s.get("t_max", "1dur") != "1dur":
        raise ConfigError(f"scheduler.t_max: {s['t_max']!r}: the Trainer's schedules end with the run (1dur)")
    if name == "constant_with_warmup":
        return "constant_with_warmup", warmup, {}
    shape = {"one_minus_sqrt": "one_minus_sqrt", "cosine_with_warmup": "cosine"}.get(name, s.get("decay_shape", "one_minus_sqrt"))
    if name not in ("warmup_stable_decay", "one_minus_sqrt", "cosine_with_warmup") or shape not in _DECAY_TYPES:
        raise ConfigError(f"scheduler.name: {name!r} has no transformers Trainer equivalent here")
    decay = (total_steps - warmup if name != "warmup_stable_decay"
             else steps_of(s.get("t_decay", "0.1dur"), "scheduler.t_decay", tokens_per_step, total_steps))
    return "warmup_stable_decay", warmup, {"num_decay_steps": max(1, decay), "decay_type": _DECAY_TYPES[shape],
                                           "min_lr_ratio": float(s.get("alpha_f", 0.0))}


def step_shape(cfg, mean_doc_tokens: float, tokens: int) -> dict:
    """Documents per optimizer step and per forward (FlexBERT's step and row in tokens, over the
    shards' mean document length), gradient accumulation, and the steps that make ``tokens``."""
    data = cfg.data
    mb = int(data.microbatch_size) if data.microbatch_size != "auto" else 1
    step_tokens = (data.global_batch_size or mb) * data.max_seq_len
    per_forward = max(1, round(mb * data.max_seq_len / mean_doc_tokens))
    accumulation = max(1, round(step_tokens / mean_doc_tokens / per_forward))
    tokens_per_step = per_forward * accumulation * mean_doc_tokens
    return {"docs_per_forward": per_forward, "accumulation": accumulation, "tokens_per_step": tokens_per_step,
            "max_steps": max(1, math.ceil(tokens / tokens_per_step))}


def documents(shards: str, split: str = "train") -> list[dict]:
    """Every sample of a shard split as ``{"input_ids": [...]}`` (one per document chunk, in order)."""
    ds = StreamingDataset(local=shards, split=split, shuffle=False, batch_size=1)
    return [{"input_ids": ds[i]["input_ids"].astype("int64").tolist()} for i in range(ds.num_samples)]


def build_model(cfg, variant: str) -> ModernBertForMaskedLM:
    """ModernBertForMaskedLM from FlexBERT's HF config mapping, seeded with the run's seed."""
    hf_config = config_to_hf(cfg.model)
    hf_config.sparse_prediction = variant == "sparse"
    torch.manual_seed(cfg.seed)
    attn = "flash_attention_2" if variant == "unpadded" else "sdpa"
    return ModernBertForMaskedLM._from_config(hf_config, attn_implementation=attn)


def training_args(cfg, spec: LegSpec, shape: dict) -> TrainingArguments:
    opt = cfg.optimizer
    sched, warmup, kwargs = trainer_schedule(cfg.scheduler, shape["tokens_per_step"], shape["max_steps"])
    on_cuda = spec.device == "cuda"
    return TrainingArguments(
        output_dir=os.path.join(spec.out, "trainer"), per_device_train_batch_size=shape["docs_per_forward"],
        gradient_accumulation_steps=shape["accumulation"], max_steps=shape["max_steps"], learning_rate=opt.lr,
        adam_beta1=opt.betas[0], adam_beta2=opt.betas[1], adam_epsilon=opt.eps, optim="adamw_torch",
        weight_decay=opt.weight_decay / opt.effective_max_lr if opt.decouple_lr else opt.weight_decay,
        lr_scheduler_type=sched, warmup_steps=warmup, lr_scheduler_kwargs=kwargs, max_grad_norm=0.0,
        seed=cfg.seed, data_seed=cfg.seed, bf16=on_cuda and cfg.precision in ("auto", "amp_bf16"),
        use_cpu=not on_cuda, dataloader_num_workers=cfg.data.num_workers, save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False)


def save_checkpoint(model: ModernBertForMaskedLM, tokenizer, path: str) -> None:
    """The transformers side's checkpoint: ``save_pretrained`` of the model (safetensors) and tokenizer."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


class CountingTrainer(Trainer):
    """The Trainer, counting the real (non-pad) tokens of each microbatch it trains on."""

    real_tokens = 0

    def training_step(self, model, inputs, *args, **kwargs):
        self.real_tokens += int(inputs["attention_mask"].sum())
        return super().training_step(model, inputs, *args, **kwargs)


class Marks(TrainerCallback):
    """Saves an HF folder at each token mark (the clock paused) and stops at the token budget."""

    def __init__(self, spec: LegSpec, tokenizer, sync):
        self.spec, self.tokenizer, self.sync = spec, tokenizer, sync
        self.trainer = None
        self.pending = sorted(spec.marks)
        self.points: list[dict] = []
        self.paused = 0.0
        self.t0 = 0.0

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kw):
        seen = self.trainer.real_tokens
        done = seen >= self.spec.tokens or state.global_step >= args.max_steps
        if (self.pending and seen >= self.pending[0]) or done:
            self.sync()
            now = time.perf_counter()
            point = {"tokens": seen, "step": state.global_step, "seconds": now - self.t0 - self.paused}
            point["path"] = os.path.join(self.spec.out, "checkpoints", f"tok{seen}")
            save_checkpoint(model, self.tokenizer, point["path"])
            self.points.append(point)
            self.pending = [m for m in self.pending if m > seen]
            self.paused += time.perf_counter() - now
        control.should_training_stop = done
        return control


def run_leg(spec: LegSpec) -> dict:
    """Train, save at the marks, write and return ``leg.json``."""
    torch.set_num_threads(spec.threads)
    cfg = load_run_config(spec.config, [*spec.overrides, f"data.local={spec.shards}", f"seed={spec.seed}"])
    source = resolve_source(cfg.data)
    cfg = with_data_source(cfg, source)  # the model's special ids from the tokenizer, as train.py takes them
    shape = step_shape(cfg, spec.mean_doc_tokens, spec.tokens)
    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.data.max_mlm_probability)
    model = build_model(cfg, spec.variant)
    on_cuda = spec.device == "cuda"
    marks = Marks(spec, tokenizer, torch.cuda.synchronize if on_cuda else (lambda: None))
    trainer = CountingTrainer(model=model, args=training_args(cfg, spec, shape), train_dataset=documents(spec.shards),
                              data_collator=collator, callbacks=[marks])
    marks.trainer = trainer
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = {"spec": asdict(spec), "shape": shape, "points": marks.points, "tokens": trainer.real_tokens,
              "train_seconds": marks.points[-1]["seconds"] if marks.points else None,
              "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None}
    with open(os.path.join(spec.out, "leg.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = LegSpec(**json.load(f))
    run_leg(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
