"""The phase chain: tiny -> tiny-context-extension -> tiny-decay through scripts/run_phases.py
(real train.py runs on small shards), then a rerun that does no work."""

import json
import os
import subprocess

import pytest
import torch
import yaml

from test_train_fixtures import PY, ROOT, data_dir, model_overrides, read_jsonl, to_overrides

from flexbert.eval.evaluation import read_result
from flexbert.experiments.phases import split_overrides
from flexbert.experiments.plots import is_png

CONFIGS = [os.path.join(ROOT, "configs", f) for f in ("tiny.yaml", "tiny-context-extension.yaml", "tiny-decay.yaml")]


def test_split_overrides():
    assert split_overrides(["a=1", "2:b=2", "3:c.d=x:y"], 3) == [["a=1"], ["a=1", "b=2"], ["a=1", "c.d=x:y"]]
    with pytest.raises(ValueError, match="phase 4 does not exist"):
        split_overrides(["4:a=1"], 3)


def _run(root, args):
    return subprocess.run([PY, os.path.join(ROOT, "scripts/run_phases.py"), *CONFIGS, "--runs-root", str(root), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200,  # a hang guard; --niah adds an evaluation per phase
                          env=dict(os.environ, PYTHONPATH=ROOT, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false"))


@pytest.fixture(scope="module")
def chain(tmp_path_factory, data):
    long_data = data_dir(tmp_path_factory, 256)
    root = tmp_path_factory.mktemp("chain")
    args = to_overrides(model_overrides(), "model.") + [
        "data.num_workers=0", "data.global_batch_size=4", "data.microbatch_size=2", "data.batch_size_warmup_min=0",
        "data.batch_size_warmup_tokens=0", "data.doc_batch_size=32", "data.packer_buffer_size=64",
        "eval_subset_num_batches=2", "save_interval=2ba", "loggers.console=false",
        f"1:data.local={data}", "1:max_duration=6ba", "1:scheduler.t_warmup=2ba",
        "1:data.microbatch_size=auto",  # phase 1 resolves its row size; the chain and every tool read it back
        f"2:data.local={long_data}", "2:data.max_seq_len=256", "2:max_duration=4ba",
        f"3:data.local={long_data}", "3:data.max_seq_len=256", "3:max_duration=4ba",
        "--niah",  # each phase's needle-in-a-haystack table and heatmap
    ]
    r = _run(root, args)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return root, args, r


@pytest.mark.slow
def test_chain_runs_each_phase_from_the_previous_one(chain):
    root, _, r = chain
    done = [json.load(open(root / name / "phase_done.json")) for name in ("tiny", "tiny-context-extension", "tiny-decay")]
    assert done[0]["checkpoint"].endswith("tiny/checkpoints/ba6.pt")
    for prev, name in ((done[0], "tiny-context-extension"), (done[1], "tiny-decay")):
        cfg = yaml.safe_load(open(root / name / "config.yaml"))
        assert cfg["load_path"] == prev["checkpoint"] and cfg["reset_time"] is True
    ext = yaml.safe_load(open(root / "tiny-context-extension" / "config.yaml"))
    assert ext["model"]["global_rope_theta"] == 160000.0 and ext["model"]["local_rope_theta"] == 10000.0
    assert ext["data"]["max_seq_len"] == 256
    # longer rows: the same number of sequences per step carries about twice the tokens
    per_batch = {}
    for name in ("tiny", "tiny-context-extension"):
        recs = [x for x in read_jsonl(root / name / "metrics.jsonl") if x["kind"] == "train"]
        assert recs[0]["batch"] == 1  # a fresh clock in every phase
        per_batch[name] = recs[-1]["tokens"] / recs[-1]["batch"]
    assert per_batch["tiny-context-extension"] > 1.6 * per_batch["tiny"], per_batch
    lengths = json.load(open(root / "tiny-context-extension" / "length_eval.json"))
    assert set(lengths) == {"loss@128", "loss@256"} and all(0 < v < 20 for v in lengths.values())
    assert "eval loss by length" in r.stdout
    for name in ("tiny", "tiny-context-extension", "tiny-decay"):  # each phase: loss per document-length range
        buckets = json.load(open(root / name / "length_buckets_eval.json"))
        assert [b["range"] for b in buckets] == ["len-0-127", "len-128-511", "len-512-2047", "len-2048-max"]
        assert sum(b["masked_tokens"] for b in buckets) > 0 and all(b["loss"] is None or 0 < b["loss"] < 20 for b in buckets)
    assert r.stdout.count("eval loss by document length") == 3
    for name in ("tiny", "tiny-context-extension", "tiny-decay"):  # each phase: the needle table up to 256 tokens
        niah = read_result(str(root / name / "niah"))
        assert niah.task == "niah" and niah.details["lengths"] == [64, 128, 256] and len(niah.details["table"]) == 15
        assert niah.model["path"].endswith(".pt") and 0 <= niah.metric("test_accuracy") <= 1
        assert is_png(str(root / name / "niah" / "niah.png"))
    assert r.stdout.count("needle in a haystack (value accuracy by length and depth)") == 3


@pytest.mark.slow
def test_extension_uses_the_new_theta(chain):
    from flexbert.train.loading import load_initial_weights
    from flexbert.train.recipe import build_model
    from flexbert.train.config import load_run_config

    root = chain[0]
    cfg_path = str(root / "tiny-context-extension" / "config.yaml")
    ckpt = json.load(open(root / "tiny-context-extension" / "phase_done.json"))["checkpoint"]
    ids = torch.randint(5, 1000, (1, 200))
    outs = {}
    for theta in (160000.0, 10000.0, 160000.0 + 0.0):
        model = build_model(load_run_config(cfg_path, [f"model.global_rope_theta={theta}"])).model.eval()
        load_initial_weights(type("W", (), {"model": model})(), ckpt)
        with torch.no_grad():
            outs.setdefault(theta, []).append(model(input_ids=ids).logits)
    same = outs[160000.0]
    assert torch.equal(same[0], same[1])  # deterministic: the difference below is the theta's
    assert not torch.allclose(same[0], outs[10000.0][0], rtol=0, atol=2e-5)


@pytest.mark.slow
def test_decay_phase_ends_at_its_final_lr(chain):
    """1-sqrt decay over the whole phase: batch b trains at lr(b-1 of 4); the curve reaches
    alpha_f x lr at the end of the phase (the step after the last one)."""
    import math

    from flexbert.train.schedulers import decay_value

    root = chain[0]
    recs = [x for x in read_jsonl(root / "tiny-decay" / "metrics.jsonl") if x["kind"] == "train"]
    want = [1e-3 * (0.001 + 0.999 * (1 - math.sqrt((b - 1) / 4))) for b in (1, 2, 3, 4)]
    assert [x["batch"] for x in recs] == [1, 2, 3, 4]
    assert [x["lr"] for x in recs] == pytest.approx(want, rel=1e-6)
    assert 1e-3 * decay_value("one_minus_sqrt", 1.0, 0.001) == pytest.approx(1e-6)


@pytest.mark.slow
def test_rerun_does_no_work(chain):
    root, args, _ = chain
    before = {p: os.path.getmtime(p) for p in root.rglob("*.pt")}
    r = _run(root, args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("already finished") == 3
    assert {p: os.path.getmtime(p) for p in root.rglob("*.pt")} == before


@pytest.mark.slow
def test_an_auto_microbatch_run_is_evaluated_exported_averaged_and_continued(chain, tmp_path, data):
    """data.microbatch_size=auto: the run folder keeps the resolved size, so eval_mlm.py, export,
    averaging and the phase chain (phase 2 started from it and evaluated it at both lengths) work."""
    from flexbert.weights.averaging import average_checkpoints
    from flexbert.weights.export import export_to_hf
    from flexbert.train.run_folder import RunFolder

    run = RunFolder(str(chain[0] / "tiny"))
    assert yaml.safe_load(open(run.config_path))["data"]["microbatch_size"] == 4  # cpu rule: 4 x 128 tokens
    assert run.load_config().data.microbatch_size == 4
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/eval_mlm.py"), "--model", run.path, "--data", data,
                        "--max-batches", "2", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["rows"] == 2
    assert export_to_hf(str(tmp_path / "hf"), run_dir=run.path)["checkpoint"].endswith("ba6.pt")
    avg = average_checkpoints([p for _, p in sorted(run.checkpoints())][-2:], str(tmp_path / "avg"))
    assert RunFolder(str(tmp_path / "avg")).load_config().data.microbatch_size == 4 and os.path.exists(avg)
    assert set(json.load(open(chain[0] / "tiny-context-extension" / "length_eval.json"))) == {"loss@128", "loss@256"}


def test_the_phases_of_a_chain_share_one_wandb_group():
    from flexbert.experiments.phases import plan_phases

    groups = [ph.cfg.loggers.wandb_group for ph in plan_phases(CONFIGS, [])]
    assert groups == ["tiny"] * 3  # the first phase's run name
    assert [ph.cfg.loggers.wandb_group for ph in plan_phases(CONFIGS, ["loggers.wandb_group=mine"])] == ["mine"] * 3


def test_a_phase_whose_folder_holds_another_run_is_refused_without_rerun_advice(trained, data):
    """A hand-run of another model in phase 1's folder (the README's ablation once wrote runs/tiny):
    the chain says the phase was refused and how to give it folders of its own, not "rerun"."""
    from flexbert.experiments.phases import run_chain

    cfg, _ = trained
    with pytest.raises(RuntimeError) as e:
        run_chain(CONFIGS[:1], [f"data.local={data}", f"run_dir={cfg['run_dir']}", f"save_folder={cfg['save_folder']}"])
    assert str(e.value) == (f"phase 1 (tiny) was refused (the error above says why) and a rerun will be too until that "
                            f"is fixed; if {cfg['run_dir']} holds another run, give the chain folders of its own with "
                            "--runs-root DIR")


def test_the_readme_ablation_and_the_phase_demo_train_in_folders_of_their_own():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ablations = [x for x in readme.splitlines() if "train.py configs/tiny.yaml" in x and " model." in x]
    assert ablations and all("run_name=" in x for x in ablations)
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert "--runs-root runs/phases-demo" in makefile.split("phases-demo: install", 1)[1].split("\n\n", 1)[0]


def test_two_phases_in_one_run_folder_are_refused(tmp_path):
    """A phase config that inherits the previous phase's run_name would be skipped as 'finished'."""
    from flexbert.config import ConfigError
    from flexbert.experiments.phases import plan_phases

    second = tmp_path / "second.yaml"
    second.write_text(f"inherit: {CONFIGS[0]}\nmax_duration: 4ba\n")
    with pytest.raises(ConfigError, match=r"phases 1 and 2 .* would both train in runs/tiny; give each phase its own"):
        plan_phases([CONFIGS[0], str(second)], [])
