"""Run a list of phase configs in order (pretraining -> context extension -> decay).

Each phase is one ``train.py`` run.  From the second phase on, ``load_path`` is set to the
previous phase's final checkpoint (the phase configs themselves carry ``reset_time: true``, the
new ``max_seq_len``, RoPE theta, LR and schedule).  A finished phase leaves
``{run_dir}/phase_done.json``; a rerun skips it, so running the chain again does no work.  After a
phase that changes the sequence length, its final weights are evaluated at both lengths (the
previous phase's eval data and its own) into ``{run_dir}/length_eval.json``.  Phases may differ in
``objective`` (CLM then MLM: configs/tiny-clm.yaml -> configs/tiny-clm-mlm.yaml); each phase is
evaluated with its own.  With ``niah``, each phase's final weights also get the needle-in-a-haystack
table (flexbert/eval/niah.py) in ``{run_dir}/niah/`` (result.json, niah.png), at lengths up to the
chain's longest sequence.

Overrides: ``key=value`` applies to every phase, ``N:key=value`` only to phase N (1-based).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

from flexbert.config import ConfigError
from flexbert.data.loader import has_eval
from flexbert.data.outputs import write_json
from flexbert.eval.evaluation import run_evaluation
from flexbert.eval.mlm import DEFAULT_LENGTH_BOUNDS, evaluate_mlm, format_by_length, mlm_loader
from flexbert.eval.niah import format_table
from flexbert.experiments.launcher import flexbert_command, run_command
from flexbert.experiments.plots import niah_heatmap
from flexbert.train.config import load_run_config
from flexbert.train.loading import load_initial_weights
from flexbert.train.recipe import build_model
from flexbert.train.run_folder import RunFolder, RunFolderError

DONE = "phase_done.json"


@dataclass
class Phase:
    config: str
    overrides: list[str]
    cfg: object  # RunConfig


def split_overrides(overrides: list[str], n_phases: int) -> list[list[str]]:
    """Per phase: the global overrides, then that phase's ``N:`` ones."""
    out: list[list[str]] = [[] for _ in range(n_phases)]
    for o in overrides:
        head, sep, rest = o.partition(":")
        if sep and head.isdigit() and "=" not in head:
            n = int(head)
            if not 1 <= n <= n_phases:
                raise ConfigError(f"override '{o}': phase {n} does not exist (phases 1..{n_phases})")
            out[n - 1].append(rest)
        else:
            for per in out:
                per.append(o)
    return out


def plan_phases(configs: list[str], overrides: list[str], runs_root: Optional[str] = None) -> list[Phase]:
    """Validated RunConfigs of every phase (load_path of phase 2+ is filled in when it runs)."""
    phases: list[Phase] = []
    for path, ov in zip(configs, split_overrides(overrides, len(configs))):
        cfg = load_run_config(path, ov)
        if runs_root and not any(o.startswith("run_dir=") for o in ov):
            ov = ov + [f"run_dir={os.path.join(runs_root, cfg.run_name)}"]
        if not any(o.startswith("loggers.wandb_group=") for o in ov):  # the chain is one wandb group
            ov = ov + [f"loggers.wandb_group={phases[0].cfg.run_name if phases else cfg.run_name}"]
        cfg = load_run_config(path, ov)
        phases.append(Phase(path, ov, cfg))
    seen: dict[str, int] = {}
    for i, ph in enumerate(phases, 1):
        folder = os.path.realpath(ph.cfg.resolved_run_dir)
        if folder in seen:
            raise ConfigError(f"phases {seen[folder]} and {i} ({configs[seen[folder] - 1]}, {ph.config}) would both train in "
                              f"{ph.cfg.resolved_run_dir}; give each phase its own run_name or run_dir")
        seen[folder] = i
    return phases


def final_checkpoint(cfg) -> str:
    try:
        return os.path.abspath(RunFolder.of(cfg).newest_checkpoint(cfg))
    except RunFolderError as e:
        raise RuntimeError(f"phase {cfg.run_name} finished without a checkpoint: {e}") from None


def _done(cfg) -> Optional[str]:
    path = RunFolder.of(cfg).file(DONE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        ckpt = json.load(f).get("checkpoint")
    return ckpt if ckpt and os.path.exists(ckpt) else None


def train_subprocess(config: str, overrides: list[str]) -> int:
    return run_command(flexbert_command("train", config, *overrides))


def run_chain(configs: list[str], overrides: list[str], runs_root: Optional[str] = None,
              train: Callable[[str, list[str]], int] = train_subprocess, log=print, niah: bool = False) -> list[str]:
    """Run the phases; returns each phase's final checkpoint."""
    phases = plan_phases(configs, overrides, runs_root)
    longest = max(ph.cfg.data.max_seq_len for ph in phases)
    finals: list[str] = []
    for i, ph in enumerate(phases):
        ov = ph.overrides + ([f"load_path={finals[-1]}"] if finals else [])
        cfg = load_run_config(ph.config, ov)
        done = _done(cfg)
        if done:
            log(f"[phases] {i + 1}/{len(phases)} {cfg.run_name}: already finished ({done}); skipped")
            finals.append(done)
            continue
        log(f"[phases] {i + 1}/{len(phases)} {cfg.run_name}: train.py {ph.config} {' '.join(ov)}")
        rc = train(ph.config, ov)
        if rc == 2:  # refused before training (the line above says why): a rerun is refused the same way
            raise RuntimeError(f"phase {i + 1} ({cfg.run_name}) was refused (the error above says why) and a rerun "
                               f"will be too until that is fixed; if {cfg.resolved_run_dir} holds another run, give "
                               "the chain folders of its own with --runs-root DIR")
        if rc != 0:
            raise RuntimeError(f"phase {i + 1} ({cfg.run_name}) failed with exit code {rc}; rerun to resume it")
        ckpt = final_checkpoint(cfg)
        if i and phases[i - 1].cfg.data.max_seq_len != cfg.data.max_seq_len:
            report = length_losses(cfg, ckpt, [phases[i - 1].cfg, cfg])
            write_json(RunFolder.of(cfg).file("length_eval.json"), report)
            log(f"[phases] {cfg.run_name} eval loss by length: " + ", ".join(f"{k}: {v:.4f}" for k, v in report.items()))
        by_length = phase_by_length(cfg, ckpt)
        if by_length is not None:
            write_json(RunFolder.of(cfg).file("length_buckets_eval.json"), by_length)
            log(f"[phases] {cfg.run_name} eval loss by document length:\n{format_by_length(by_length)}")
        if niah:
            phase_niah(cfg, ckpt, longest, log)
        write_json(RunFolder.of(cfg).file(DONE), {"checkpoint": ckpt, "config": os.path.abspath(ph.config), "overrides": ov})
        finals.append(ckpt)
    return finals


def length_losses(cfg, checkpoint: str, length_cfgs: list) -> dict[str, float]:
    """``{"loss@LEN": value}``: ``checkpoint``'s weights (model of ``cfg``) on each config's eval data."""
    cfg = RunFolder.of(cfg).resolved(cfg)  # data.microbatch_size: auto -> the run's recorded choice
    model = build_model(cfg)
    load_initial_weights(model, checkpoint)
    out = {}
    for other in length_cfgs:
        data_cfg = dataclasses.replace(RunFolder.of(other).resolved(other).data, num_workers=0)
        out[f"loss@{data_cfg.max_seq_len}"] = evaluate_mlm(model.model, mlm_loader(data_cfg, cfg.objective),
                                                            max(1, cfg.eval_subset_num_batches), shapes=model.shapes,
                                                            causal=cfg.causal)["loss"]
    return out


def phase_by_length(cfg, checkpoint: str) -> Optional[list]:
    """The phase's held-out loss per document-length range (None without an eval split): MLM, or
    the next-token loss of a CLM phase (``objective: clm``)."""
    cfg = RunFolder.of(cfg).resolved(cfg)
    data_cfg = dataclasses.replace(cfg.data, num_workers=0)
    if not has_eval(data_cfg):
        return None
    model = build_model(dataclasses.replace(cfg, compile="none"))
    load_initial_weights(model, checkpoint)
    return evaluate_mlm(model.model, mlm_loader(data_cfg, cfg.objective), max_batches=max(1, cfg.eval_subset_num_batches),
                        bounds=DEFAULT_LENGTH_BOUNDS, causal=cfg.causal)["by_length"]


def phase_niah(cfg, checkpoint: str, longest: int, log=print) -> None:
    """The phase's needle-in-a-haystack table at 64, 128, ... up to ``longest`` tokens, in ``{run_dir}/niah``."""
    out = RunFolder.of(cfg).file("niah")
    lengths = [n for n in (64 * 2 ** k for k in range(16)) if n < longest] + [longest]
    result = run_evaluation("niah", {"model": checkpoint, "lengths": lengths, "out": out, "overwrite": True})
    niah_heatmap(result.details["table"], os.path.join(out, "niah.png"), title=f"needle in a haystack: {cfg.run_name}")
    log(f"[phases] {cfg.run_name} needle in a haystack (value accuracy by length and depth):\n"
        f"{format_table(result.details['table'])}")
