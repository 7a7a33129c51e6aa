"""The contrastive stage: fine-tune a pretrained encoder into a retriever on (query, positive[,
negative]) rows with in-batch negatives, on one process or many.

Driven by sentence-transformers' own trainer and losses (flexbert/eval/contrastive.py says which
and why): ``MultipleNegativesRankingLoss``, its cached (GradCache) form for batches larger than
memory (``mini_batch_size``), ``MatryoshkaLoss`` (``matryoshka_dims``), SPLADE on the MLM head
(``sparse``), negatives gathered across processes, the no-duplicates batch sampler over the global
batch, several pair files in one run (flexbert/eval/pairs.py), query/passage prompts stored in the
saved model (``SentenceTransformer(OUT).encode(texts, prompt_name="query")``), checkpoints in
``OUT/work`` that a rerun continues from.  The trainer needs ``datasets`` and ``accelerate``
(pinned with the 'retrieval' extra to releases that accept transformers 4.53's huggingface_hub).

Several processes: ``torchrun --nproc-per-node N -m flexbert finetune-retrieval ...`` (or
``accelerate launch -m flexbert finetune-retrieval ...``); gloo on CPU, NCCL on GPUs; the batch
size is the global one.  The model is anything ``--model`` takes (flexbert/weights/load.py); the
output is a SentenceTransformer (or SparseEncoder) folder, for ``flexbert eval-retrieval``, with the
``retrieval-finetune`` evaluation's result.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence, Union

from transformers import set_seed
from transformers.trainer_callback import TrainerCallback

from flexbert.config import ConfigError, options_from_file
from flexbert.data.beir import load_beir
from flexbert.data.outputs import check_output_dir
from flexbert.env import dist_env
from flexbert.eval.contrastive import (
    Progress,
    barrier,
    build_loss,
    build_trainer,
    close_work,
    open_work,
    resume_checkpoint,
    train,
    training_args,
    work_folder,
)
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.eval.pairs import (  # noqa: F401 - read_pairs, check_batches: the pairs reader's public names
    RetrievalTrainingError,
    check_batches,
    column_prompts,
    pair_datasets,
    read_pairs,
)
from flexbert.eval.retrieval import load_retriever, score_model


def reinitialize(model) -> None:
    """The same architecture with fresh weights (a baseline): the transformer's own initialisation
    (transformers' ``_init_weights``, applied to every module; ``init_weights()`` would skip the
    modules ``from_pretrained`` marked as initialised), seeded by the caller."""
    transformer = model[0].auto_model
    transformer.apply(transformer._init_weights)
    if hasattr(transformer, "tie_weights"):
        transformer.tie_weights()


ZERO_LOSS_STEPS = 5  # this many first steps at a loss of exactly 0: nothing is being learned


class ZeroLossStop(TrainerCallback):
    """Stops the trainer when its first ``steps`` logged losses are all exactly 0 (the trainer logs
    them rounded to 4 places): a batch in which nothing can be told apart teaches nothing."""

    def __init__(self, steps: int = ZERO_LOSS_STEPS):
        self.steps, self.first, self.stopped = steps, [], False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and len(self.first) < self.steps:
            self.first.append(float(logs["loss"]))
            if len(self.first) == self.steps and not any(self.first):
                control.should_training_stop = self.stopped = True
        return control

    def check(self, losses: list[float]) -> None:
        """Refuse (one line) a run whose loss never left 0: stopped early, or shorter than ``steps``."""
        if self.stopped or (losses and not any(losses)):
            raise RetrievalTrainingError(
                f"the loss was exactly 0 for the first {len(self.first) or len(losses)} step(s): the batches hold "
                "nothing to tell apart, so nothing is learned; training stopped and nothing was written")


@dataclass
class RetrievalFinetuneConfig:
    model: str = ""  # run folder, checkpoint, or SentenceTransformer folder
    train: Union[str, list[str]] = ""  # one or more tables of (query, positive[, negative]) rows
    out: str = ""  # the output SentenceTransformer folder (with result.json; OUT/work while training)
    config: Optional[str] = None  # the YAML these options came from, for the record
    eval: Optional[str] = None  # a BEIR folder scored before and after training
    split: str = "test"  # the eval folder's qrels split
    skip_empty: bool = False  # leave blank rows, queries and documents out (counted) instead of refusing them
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many steps (before the epochs end)
    batch_size: int = 32  # rows per step over all processes: the in-batch negatives
    mini_batch_size: Optional[int] = None  # the cached loss (GradCache): embed the batch in chunks of this size
    gather: bool = True  # on several processes, every query meets every process's passages
    mix: Literal["proportional", "round_robin"] = "proportional"  # how batches are drawn from several files
    query_prompt: Optional[str] = None  # text put before every query, stored as the model's "query" prompt
    passage_prompt: Optional[str] = None  # before every passage, stored as its "passage" prompt
    matryoshka_dims: Optional[list[int]] = None  # train nested widths (MatryoshkaLoss); scored at each
    sparse: bool = False  # SPLADE: train and score the MLM head as a SparseEncoder
    query_regularizer: float = 5e-5  # SPLADE's FLOPS weight on query vectors
    document_regularizer: float = 3e-5  # and on passage vectors
    lr: float = 2e-5
    warmup: float = 0.1  # fraction of the steps with a rising learning rate
    max_seq_len: Optional[int] = None
    seed: int = 0
    random_init: bool = False  # same architecture, fresh weights (a baseline)
    query_column: str = "query"
    positive_column: str = "positive"
    negative_column: str = "negative"
    save_steps: int = 500  # a checkpoint in OUT/work every this many steps (a rerun continues from it)
    progress: bool = True
    overwrite: bool = False

    @property
    def train_files(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train)

    def validate(self, prefix: str = "") -> None:
        for key in ("model", "train", "out"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: required (--{key} or in --config)")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup: must be in [0, 1), got {self.warmup}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size: in-batch negatives need at least 2 rows per batch, got {self.batch_size}")
        for key in ("epochs", "max_steps", "mini_batch_size", "save_steps"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.matryoshka_dims is not None and (not self.matryoshka_dims or min(self.matryoshka_dims) < 1):
            raise ConfigError(f"matryoshka_dims: widths >= 1, got {self.matryoshka_dims}")
        if self.sparse and (self.matryoshka_dims or self.mini_batch_size or self.random_init):
            raise ConfigError("sparse: SPLADE takes neither matryoshka_dims, mini_batch_size nor random_init")


def load_retrieval_finetune_config(path: Optional[str], given: dict) -> RetrievalFinetuneConfig:
    """A YAML file of RetrievalFinetuneConfig keys, the command line's over them (one line naming
    the file and the key for an unknown key or a wrong value)."""
    return options_from_file(RetrievalFinetuneConfig, path, given)


def _load(cfg: RetrievalFinetuneConfig):
    loaded = load_retriever(cfg.model, cfg.sparse, max_seq_len=cfg.max_seq_len)
    model = loaded.model
    if cfg.random_init:
        reinitialize(model)
    width = model.get_sentence_embedding_dimension()
    if cfg.matryoshka_dims and max(cfg.matryoshka_dims) > width:
        raise ConfigError(f"matryoshka_dims: {max(cfg.matryoshka_dims)} is wider than {cfg.model}'s {width} dimensions")
    # "document" too: the name sentence-transformers' encode_document looks up first (it adds an empty
    # one to every model it loads, which would shadow "passage" in a saved model)
    given = {"query": cfg.query_prompt, "passage": cfg.passage_prompt, "document": cfg.passage_prompt}
    if any(given.values()):  # sentence-transformers' empty defaults ("document": "") would shadow "passage"
        model.prompts = {k: v for k, v in {**model.prompts, **given}.items() if v}
    return loaded, model


def _evaluate(model, cfg: RetrievalFinetuneConfig, main: bool) -> tuple[Optional[dict], list]:
    if cfg.eval is None or not main:
        return None, []
    return score_model(model, load_beir(cfg.eval, cfg.split, cfg.skip_empty), cfg.matryoshka_dims)


def _prompts(model, names: Optional[list[str]]):
    """The trainer's prompts: the model's stored query and passage prompts, per column."""
    p = model.prompts
    return column_prompts(names, p.get("query"), p.get("passage") or p.get("document"))


@evaluation("retrieval-finetune", RetrievalFinetuneConfig)
def finetune_retrieval(cfg: RetrievalFinetuneConfig, log: Callable[[str], None] = print,
                       callbacks: Sequence = ()) -> Result:
    """Fine-tune, save the model to ``cfg.out``; the result: with ``cfg.eval``, the BEIR metrics
    after training (before it in ``details``; one row per Matryoshka width in ``details["dims"]``),
    the loss of every step.  ``callbacks``: more transformers TrainerCallbacks (tests)."""
    env = dist_env()
    main = env.rank == 0
    inputs = [cfg.model, *cfg.train_files, cfg.eval]
    check_output_dir(cfg.out, inputs)
    columns = (cfg.query_column, cfg.positive_column, cfg.negative_column)
    data, summary, warnings = pair_datasets(cfg.train_files, columns, cfg.skip_empty, cfg.batch_size, cfg.seed)
    if cfg.eval is not None:  # a bad folder fails before any training; what its checks leave out is said
        warnings += load_beir(cfg.eval, cfg.split, cfg.skip_empty).warnings
    set_seed(cfg.seed)
    loaded, model = _load(cfg)
    # the arguments first: making them starts the process group (several processes) the barrier needs
    args = training_args(cfg, work_folder(cfg.out), env.world_size,
                         _prompts(model, list(summary) if len(summary) > 1 else None))
    work = open_work(cfg.out, settings_of(cfg), cfg.overwrite, inputs, main)
    barrier()  # the main process has prepared the work folder
    before, _ = _evaluate(model, cfg, main)
    kinds = ", ".join(f"{name}: {n} {kind}" for name, (n, kind) in summary.items())
    loss = build_loss(model, cfg, env.world_size)
    if main:
        log(f"[finetune_retrieval] {kinds}; batch {cfg.batch_size} over {env.world_size} process(es), "
            f"{cfg.epochs} epoch(s), {type(loss).__name__}")
    zero = ZeroLossStop()
    trainer = build_trainer(model, data, loss, args, [Progress(log, cfg.progress), zero, *callbacks])
    resume = resume_checkpoint(work)
    train(trainer, resume)
    losses = [rec["loss"] for rec in trainer.state.log_history if "loss" in rec]
    zero.check(losses)
    after, rows = _evaluate(model, cfg, main)
    if main:
        model.save(cfg.out)
        close_work(cfg.out)
    barrier()
    details = {"rows": sum(n for n, _ in summary.values()), "datasets": {k: n for k, (n, _) in summary.items()},
               "kind": "triplets" if all(k == "triplets" for _, k in summary.values()) else "pairs",
               "steps": len(losses), "losses": losses, "processes": env.world_size, "resumed_from": resume,
               "prompts": dict(model.prompts), "metrics_before": {cfg.split: before} if before is not None else None,
               **({"warnings": warnings} if warnings else {})}
    if rows:
        details["dims"] = rows
    return Result("retrieval-finetune", loaded.ref(random_init=cfg.random_init), settings_of(cfg),
                  {cfg.split: after} if after is not None else {}, details)
