"""Time to the same held-out loss: FlexBERT (train.py) against transformers' Trainer + ModernBertForMaskedLM.

    flexbert bench-pretraining --config configs/tiny.yaml --data runs/demo/shards --tokens 2M \\
        --seeds 17 18 --device cpu --out runs/bench-pretraining

Trains the config's architecture on the shards for the same token budget with FlexBERT and with
transformers' Trainer (padded batches, DataCollatorForLanguageModeling, AdamW; the same mask rate,
peak LR, warmup and decay shape, seeds), saves checkpoints along the way, scores every one with ONE
evaluator (held-out MLM loss on the shards' validation split, same masked positions for all) and
writes OUT/result.json (``speedup``: transformers' seconds / FlexBERT's seconds to transformers' final
held-out loss), OUT/table.md and OUT/loss_vs_tokens.png, OUT/loss_vs_seconds.png.
How: flexbert/experiments/pretraining_bench.py.  Extra ``key=value`` arguments override the run
config of both stacks (model, data, optimizer, scheduler; FlexBERT-only keys such as compile only
reach train.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from flexbert.cli.common import command, make_parser
from flexbert.config import at_least, parse_time
from flexbert.experiments.pretraining_bench import STACKS, BenchOptions
from flexbert.experiments.pretraining_bench import run as run_bench


def tokens(text: str) -> int:
    """2M, 500K, 2000000 (tok optional) -> a token count."""
    try:
        number, unit = parse_time(text if text.endswith("tok") else text + "tok", "--tokens")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count such as 2M, 500K or 2000000, got {text!r}") from None
    return int(number)


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert bench-pretraining")
    p.add_argument("--config", default=os.path.join("configs", "tiny.yaml"), help="run config of both stacks (default configs/tiny.yaml)")
    p.add_argument("--data", default=os.path.join("runs", "demo", "shards"),
                   help="MDS shard folder with train/ and validation/ (flexbert tokenize; default runs/demo/shards)")
    p.add_argument("--tokens", type=tokens, default=tokens("2M"), help="token budget of every leg: 2M, 500K, 2000000 (default 2M)")
    p.add_argument("--seeds", type=at_least(0), nargs="+", default=[17, 18], help="one leg per stack and seed (default 17 18)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every leg trains and the evaluator runs")
    p.add_argument("--out", required=True, help="output folder (refused when not empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (its contents are deleted)")
    p.add_argument("--stacks", nargs="+", default=["flexbert", "transformers"], metavar="STACK",
                   help=f"among {', '.join(STACKS)}: -sparse is ModernBERT's sparse_prediction=True, -unpadded its "
                        "flash_attention_2 path (CUDA + flash-attn); flexbert and transformers always (default both)")
    p.add_argument("--threads", type=at_least(1), help="torch threads per leg (default: cores / --parallel)")
    p.add_argument("--parallel", type=at_least(1),
                   help="legs at a time (default: one per stack up to the cores on cpu, so both stacks share any "
                        "load alike; 1 on cuda)")
    p.add_argument("--points", type=at_least(1), default=8, help="checkpoints per leg, evenly spaced in tokens (default 8)")
    p.add_argument("--eval-mlm-probability", type=probability, default=0.15, help="masking rate of the evaluator (default 0.15)")
    p.add_argument("--eval-seed", type=at_least(0), default=1234, help="mask seed of the evaluator (default 1234)")
    p.add_argument("--eval-max-batches", type=at_least(1), help="score only the first N validation batches (default: all)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="run-config overrides for both stacks")
    return p


def run(a: argparse.Namespace) -> int:
    bad = [kv for kv in a.overrides if "=" not in kv]
    if bad:
        parser().error(f"expected key=value overrides, got {bad[0]!r}")
    cores = os.cpu_count() or 1
    parallel = a.parallel or (1 if a.device == "cuda" else max(1, min(len(a.stacks), cores)))
    o = BenchOptions(config=a.config, data=a.data, tokens=a.tokens, seeds=a.seeds, out=a.out, device=a.device,
                     stacks=a.stacks, threads=a.threads or max(1, cores // parallel), parallel=parallel, points=a.points,
                     eval_mlm_probability=a.eval_mlm_probability, eval_seed=a.eval_seed, eval_max_batches=a.eval_max_batches,
                     overwrite=a.overwrite, overrides=a.overrides)
    result = run_bench(o, command="flexbert bench-pretraining " + " ".join(shlex.quote(x) for x in sys.argv[1:]))
    with open(result["paths"]["table"]) as f:
        print(f.read())
    print("wrote " + ", ".join(result["paths"].values()))
    return 0


main = command(parser, run, intermixed=True)
