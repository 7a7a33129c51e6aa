"""Evaluations with one shape: a registry of evaluations, each a config dataclass and a function
that returns a ``Result``, and one result file.

An evaluation is registered once::

    @evaluation("mlm", MlmEvalConfig)
    def evaluate_shards(cfg: MlmEvalConfig) -> Result: ...

``run_evaluation(name, options)`` validates the options against the config dataclass (unknown
keys, wrong types and bad values fail in one line naming the key), runs it, and writes
``OUT/result.json`` when the config has an ``out`` folder (the main process, when several run
it).  Every evaluation - held-out MLM loss, classification and regression fine-tuning, retrieval,
retrieval fine-tuning, and the next ones - writes the same schema (``RESULT_SCHEMA``)::

    {"schema": "flexbert.result/1", "task": "classification",
     "model": {"ref": "runs/x", "kind": "run", ...},      # what was evaluated (flexbert/weights/load.py)
     "settings": {...},                                     # the config as run
     "metrics": {"validation": {"accuracy": 0.71, ...}, "test": {...}},   # split -> name -> value
     "details": {...}}                                      # what only this task has (history, by length, ...)

and every reader (the budget study, the demo, reports) reads it through ``read_result`` and
``Result.metric("test_accuracy")`` (``SPLIT_NAME``), never by a task's own key path.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from flexbert.config import from_dict
from flexbert.data.outputs import write_json
from flexbert.env import dist_env
from flexbert.errors import FlexBertError
from flexbert.registry import Registry

RESULT = "result.json"
RESULT_SCHEMA = "flexbert.result/1"
# the modules that register evaluations (imported by ``evaluations()``); a new one is one line here
EVALUATION_MODULES = ("flexbert.eval.mlm", "flexbert.eval.finetune", "flexbert.eval.retrieval",
                      "flexbert.eval.retrieval_finetune", "flexbert.eval.mteb_eval", "flexbert.eval.niah")


class ResultError(FlexBertError, ValueError):
    """A result file or metric that cannot be read (one line naming the file and key)."""


@dataclass
class Result:
    task: str
    model: dict
    settings: dict
    metrics: dict[str, dict[str, float]]  # split -> metric name -> value
    details: dict = field(default_factory=dict)
    path: Optional[str] = None  # the file it was read from

    def metric(self, key: str) -> float:
        """``"test_accuracy"`` -> ``metrics["test"]["accuracy"]`` (the split is the part before the first ``_``)."""
        split, _, name = key.partition("_")
        try:
            return float(self.metrics[split][name])
        except (KeyError, TypeError, ValueError):
            known = [f"{s}_{n}" for s, values in self.metrics.items() for n in values]
            raise ResultError(f"{self.path or 'result'}: no metric {key!r} (has: {', '.join(known) or 'none'})") from None

    def as_dict(self) -> dict:
        return {"schema": RESULT_SCHEMA, "task": self.task, "model": self.model, "settings": self.settings,
                "metrics": self.metrics, "details": self.details}


def write_result(folder: str, result: Result) -> str:
    """``folder/result.json`` (atomic); the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, RESULT)
    write_json(path, result.as_dict())
    return path


def read_result(folder_or_file: str) -> Result:
    """The Result in ``folder/result.json`` (or that file)."""
    path = folder_or_file if folder_or_file.endswith(".json") else os.path.join(folder_or_file, RESULT)
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ResultError(f"{path}: no result file (did the evaluation finish?)") from None
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not a result file ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict) or raw.get("schema") != RESULT_SCHEMA:
        raise ResultError(f"{path}: not a {RESULT_SCHEMA} result file")
    return Result(raw["task"], raw.get("model", {}), raw.get("settings", {}), raw.get("metrics", {}),
                  raw.get("details", {}), path)


def settings_of(cfg: Any) -> dict:
    """A config dataclass as the ``settings`` of its result."""
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Evaluation:
    name: str
    config: type  # a dataclass of the evaluation's options (validated by flexbert.config.from_dict)
    run: Callable[[Any], Result]


EVALUATIONS: Registry[Evaluation] = Registry("evaluation")


def evaluation(name: str, config: type) -> Callable[[Callable[[Any], Result]], Callable[[Any], Result]]:
    """Register ``fn(cfg) -> Result`` as the evaluation ``name`` with options ``config``."""
    def register(fn: Callable[[Any], Result]) -> Callable[[Any], Result]:
        EVALUATIONS.register(name)(Evaluation(name, config, fn))
        return fn

    return register


def evaluations() -> Registry[Evaluation]:
    """The registry with every evaluation module imported (so every evaluation is registered)."""
    for module in EVALUATION_MODULES:
        importlib.import_module(module)
    return EVALUATIONS


def run_evaluation(name: str, options: Union[Mapping[str, Any], Any]) -> Result:
    """Validate ``options`` (a mapping, or the config dataclass itself), run the evaluation, and
    write ``result.json`` into the config's ``out`` folder when it has one."""
    ev = evaluations().get(name, "evaluation")
    cfg = options if isinstance(options, ev.config) else from_dict(ev.config, dict(options), "")
    result = ev.run(cfg)
    out = getattr(cfg, "out", None)
    if out and dist_env().rank == 0:  # one writer when an evaluation runs on several processes
        write_result(out, result)
    return result
