"""MTEB through mteb 2.x's own API: named MTEB tasks, and a local BEIR folder as an mteb task.

``mteb`` (the 'retrieval' extra) runs everything: the tasks come from ``mteb.get_tasks(tasks=[...])``
and their data from the Hub when they load; a local folder in the BEIR layout (read by the layout's
owner, flexbert/data/beir.py) becomes an mteb retrieval task object (``local_task``: an
``AbsTaskRetrieval`` whose ``load_data`` fills mteb's corpus / queries / relevant-docs split from
the folder), so a named task and a local folder go through the same ``mteb.evaluate`` call, the
same retrieval evaluator and the same scores.  The model is ``load_model(M, "encoder")``'s
SentenceTransformer (a run folder or checkpoint is exported first), handed to mteb as it is: mteb
wraps it and uses its ``query`` / ``document`` prompts when the folder stores them.

The result is the project's (``Result`` in result.json): ``metrics[split]["TASK/NAME"]`` for each
task (``main_score`` and, for retrieval, ``ndcg@10``, ``mrr@10``, ``recall@100`` - mteb's
``ndcg_at_10`` renamed as ``flexbert eval-retrieval`` names it), with mteb's whole score table per
task under ``details["mteb"]``.  A subset other than ``default`` (a language) is ``TASK/SUBSET/NAME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from flexbert.config import ConfigError
from flexbert.data.beir import Beir, load_beir
from flexbert.data.outputs import check_output_dir, prepare_output_dir
from flexbert.errors import FlexBertError
from flexbert.eval.evaluation import Result, evaluation, settings_of
from flexbert.weights.load import load_model

# mteb score name -> the name flexbert eval-retrieval gives it (kept besides main_score)
RETRIEVAL_KEYS = {"ndcg_at_10": "ndcg@10", "mrr_at_10": "mrr@10", "recall_at_100": "recall@100"}
LOCAL_PREFIX = "local:"


class MtebError(FlexBertError, ValueError):
    """An MTEB task that cannot be run (unknown name, data not reachable, mteb not installed)."""


def _mteb():
    try:
        import mteb
    except ImportError:
        raise MtebError("MTEB evaluation needs mteb 2.x (pip install 'flexbert[retrieval]')") from None
    return mteb


# --------------------------------------------------------------------------- the tasks
def named_tasks(names: list[str]) -> list:
    """mteb's task objects for ``names`` (one line for an unknown name, with mteb's suggestion)."""
    mteb = _mteb()
    try:
        return list(mteb.get_tasks(tasks=list(names))) if names else []
    except KeyError as e:
        raise MtebError(f"--tasks: unknown MTEB task ({str(e.args[0] if e.args else e).removeprefix('KeyError: ')})") from None


def local_task(folder: str, split: str = "test"):
    """An mteb retrieval task over the BEIR folder ``folder`` (its ``split`` qrels), named
    ``local:<folder name>``; the folder is read (and refused, in one line) here, at once."""
    data = load_beir(folder, split)
    _mteb()
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(
        name=LOCAL_PREFIX + os.path.basename(os.path.abspath(folder)), description=f"the BEIR folder {folder}",
        reference=None, dataset={"path": os.path.abspath(folder), "revision": "local"}, type="Retrieval",
        category="t2t", modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
        date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None, dialect=None,
        sample_creation=None, bibtex_citation=None)

    class LocalBeirRetrieval(AbsTaskRetrieval):
        def load_data(self, num_proc: Optional[int] = None, **kwargs: Any) -> None:
            self.dataset = {"default": {split: _split_data(data, Dataset)}}
            self.data_loaded = True

    LocalBeirRetrieval.metadata = metadata
    return LocalBeirRetrieval()


def _split_data(data: Beir, dataset_type) -> dict:
    """mteb's retrieval split (corpus and queries as datasets, qrels as a dict) from a ``Beir``; a
    document is the BEIR reader's "title text", so both evaluations read the same text."""
    return {"corpus": dataset_type.from_list([{"id": d, "text": t} for d, t in data.corpus.items()]),
            "queries": dataset_type.from_list([{"id": q, "text": t} for q, t in data.queries.items()]),
            "relevant_docs": data.qrels, "top_ranked": None}


def fetch(task) -> None:
    """Load a named task's data now, so an unreachable Hub is one line, not a traceback mid-run."""
    try:
        task.load_data()
    except (ConnectionError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MtebError(f"MTEB task {task.metadata.name}: its data could not be fetched ({first}); without a "
                        "network, run a local BEIR folder with --data") from None


# --------------------------------------------------------------------------- the scores
def task_metrics(task_result) -> dict[str, dict[str, float]]:
    """``{split: {"TASK/NAME": value}}`` from an mteb TaskResult: main_score, and the retrieval keys."""
    out: dict[str, dict[str, float]] = {}
    for split, subsets in task_result.scores.items():
        for scores in subsets:
            subset = scores.get("hf_subset", "default")
            prefix = task_result.task_name + ("" if subset == "default" else f"/{subset}")
            names = {"main_score": "main_score", **RETRIEVAL_KEYS}
            out.setdefault(split, {}).update(
                {f"{prefix}/{ours}": float(scores[theirs]) for theirs, ours in names.items() if theirs in scores})
    return out


# --------------------------------------------------------------------------- the evaluation
@dataclass
class MtebConfig:
    model: str = ""  # run folder, checkpoint, or SentenceTransformer folder
    tasks: list[str] = field(default_factory=list)  # MTEB task names (their data comes from the Hub)
    data: Optional[str] = None  # a local BEIR folder, run as an mteb retrieval task
    split: str = "test"  # the local folder's qrels split (named tasks use their own)
    max_seq_len: Optional[int] = None  # truncate inputs (default: the model's)
    batch_size: int = 32
    device: Optional[str] = None
    out: Optional[str] = None  # write OUT/result.json
    overwrite: bool = False

    def validate(self, prefix: str = "") -> None:
        if not self.model:
            raise ConfigError("model: required")
        if not self.tasks and not self.data:
            raise ConfigError("give --tasks NAME ..., --data BEIR_FOLDER, or both")
        if self.batch_size < 1 or (self.max_seq_len is not None and self.max_seq_len < 8):
            raise ConfigError("batch_size must be >= 1 and max_seq_len >= 8")


@evaluation("mteb", MtebConfig)
def evaluate_mteb(cfg: MtebConfig) -> Result:
    """``cfg.model`` on the named MTEB tasks and/or the local BEIR folder, by ``mteb.evaluate``."""
    if cfg.out:
        check_output_dir(cfg.out, [cfg.model, cfg.data])
    tasks = named_tasks(cfg.tasks) + ([local_task(cfg.data, cfg.split)] if cfg.data else [])
    loaded = load_model(cfg.model, "encoder", max_seq_len=cfg.max_seq_len, device=cfg.device)
    mteb = _mteb()
    import datasets

    datasets.disable_progress_bars()
    for task in tasks:
        fetch(task)
    run = mteb.evaluate(loaded.model, tasks, cache=None, overwrite_strategy="always", show_progress_bar=False,
                        encode_kwargs={"batch_size": cfg.batch_size, "show_progress_bar": False})
    metrics: dict[str, dict[str, float]] = {}
    for task_result in run.task_results:
        for split, values in task_metrics(task_result).items():
            metrics.setdefault(split, {}).update(values)
    details = {"tasks": [t.metadata.name for t in tasks], "mteb_version": mteb.__version__,
               "mteb": {r.task_name: r.scores for r in run.task_results}}
    if cfg.out:
        prepare_output_dir(cfg.out, overwrite=cfg.overwrite, inputs=[cfg.model, cfg.data])
    return Result("mteb", loaded.ref(), settings_of(cfg), metrics, details)
