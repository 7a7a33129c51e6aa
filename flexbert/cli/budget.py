"""When pretraining pays: fine-tuned scores against pretraining tokens, pretrained vs random init.

    flexbert budget --shards runs/demo/shards --budgets 1M 2M 4M 8M 16M --seeds 17 18 \\
        --task-dir runs/demo/corpus/rotten_tomatoes --retrieval runs/demo/corpus/rt_retrieval --out runs/budget

Pretrains CONFIG (default configs/tiny.yaml) once per budget and seed through the sweep runner
(a rerun resumes or skips what is done), fine-tunes each run on TASK-DIR/{train,validation,test}.jsonl
with flexbert finetune (the demo's recipe unless --finetune-args says otherwise) and, with
--retrieval, on a BEIR folder's train_pairs.jsonl with flexbert finetune-retrieval (nDCG@10 on its
test split), and the same architecture from a random init once per seed, then writes
OUT/budget.{json,md,png}: the scores per budget, the random-init band and where the curves cross
(flexbert/experiments/budget.py).
"""

from __future__ import annotations

import argparse
import os
import shlex

from flexbert.cli.common import command, make_parser
from flexbert.config import count
from flexbert.eval.recipes import RT_CLASSIFICATION, RT_RETRIEVAL, as_flags
from flexbert.experiments.budget import Pretrained, Task, collect, finetune_all, summary_line, write_report
from flexbert.experiments.sweep import Sweep, SweepError, expand, run_all, run_dir, validate

FINETUNE = " ".join(as_flags(RT_CLASSIFICATION))
RETRIEVAL = " ".join(as_flags(RT_RETRIEVAL))


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert budget")
    p.add_argument("--config", default=os.path.join("configs", "tiny.yaml"), help="pretraining run config")
    p.add_argument("--shards", required=True, help="MDS shard folder to pretrain on (data.local)")
    p.add_argument("--budgets", nargs="+", required=True, metavar="TOKENS", type=count,
                   help="pretraining budgets in tokens: 1M, 500K, 2000000 ...")
    p.add_argument("--seeds", nargs="+", type=int, default=[17, 18], help="one pretraining + fine-tune per seed")
    p.add_argument("--task-dir", required=True, help="folder with train.jsonl, validation.jsonl, test.jsonl")
    p.add_argument("--finetune-args", default=FINETUNE, help=f"flexbert finetune options (default: {FINETUNE!r})")
    p.add_argument("--metric", default="test_accuracy", help="SPLIT_NAME of the fine-tunes' result.json")
    p.add_argument("--retrieval", help="BEIR folder with train_pairs.jsonl: also fine-tune for retrieval (nDCG@10)")
    p.add_argument("--retrieval-args", default=RETRIEVAL, help=f"flexbert finetune-retrieval options (default: {RETRIEVAL!r})")
    p.add_argument("--out", required=True)
    p.add_argument("--parallel", type=int, default=1, help="runs at a time")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every pretraining run")
    return p


def pretrain(a) -> list:
    """The pretraining runs (one per budget and seed), run by the sweep runner; the finished ones."""
    fixed = dict(kv.split("=", 1) for kv in a.overrides)
    fixed.update({"data.local": os.path.abspath(a.shards), "save_num_to_keep": 1})
    runs = expand([{}], {"max_duration": [f"{t}tok" for t in a.budgets], "seed": a.seeds})
    sweep = Sweep("(pretraining budget)", "pretraining-budget", "train", os.path.abspath(a.config),
                  os.path.join(a.out, "pretrain"), fixed, runs)
    validate(sweep)
    failed = set(run_all(sweep, a.parallel))
    return [Pretrained(r.name, run_dir(sweep, r), int(r.overrides["seed"]), int(r.overrides["max_duration"][:-3]))
            for r in runs if r.name not in failed]


def tasks(a) -> list:
    split_files = [x for s in ("train", "validation", "test") for x in (f"--{s}", os.path.join(a.task_dir, f"{s}.jsonl"))]
    found = [Task("classification", "finetune", split_files + shlex.split(a.finetune_args), a.metric)]
    if a.retrieval:
        found.append(Task("retrieval", "finetune-retrieval",
                          ["--train", os.path.join(a.retrieval, "train_pairs.jsonl"), "--eval", a.retrieval, "--split", "test",
                           *shlex.split(a.retrieval_args)], "test_ndcg@10"))
    return found


def run(a: argparse.Namespace) -> int:
    runs, todo = pretrain(a), tasks(a)
    if len(runs) < len(a.budgets) * len(a.seeds):
        raise SweepError("some pretraining runs failed (logs under OUT/pretrain/logs); rerun to resume them")
    if finetune_all(runs, todo, a.out, a.seeds, a.parallel):
        raise SweepError(f"some fine-tunes failed (logs under {a.out}/logs); rerun to redo them")
    result = collect(runs, todo, a.out, a.seeds)
    paths = write_report(result, a.out)
    with open(paths["budget.md"]) as f:
        print(f.read())
    for task, r in result.items():
        print(summary_line(task, r))
    print("report: " + ", ".join(paths.values()))
    return 0


main = command(parser, run, also=(ValueError, OSError))
