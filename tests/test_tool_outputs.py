"""Every tool that writes a folder (export, tiling, averaging, fine-tuning) refuses to overwrite one
silently or to write over its own inputs, and checks the tokenizer it is given against the one the
model was trained with: each case fails on code that skips the check."""

import json
import os
import shutil

import pytest

from test_train_fixtures import documents


def _snapshot(*folders) -> dict:
    """Every file under ``folders`` with its size and mtime: equal snapshots mean nothing was written."""
    out = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for f in files:
                st = os.stat(os.path.join(root, f))
                out[os.path.join(root, f)] = (st.st_size, st.st_mtime_ns)
    return out


def _tokenizer_variant(src: str, dst: str, swap: bool = False, extra: int = 0) -> str:
    """A copy of the tokenizer at ``src``: two ids swapped (same size, other ids) and/or ``extra``
    added tokens (more ids than the model has)."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "tokenizer.json")
    with open(path) as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    if swap:
        a, b = sorted(vocab, key=vocab.get)[-2:]
        vocab[a], vocab[b] = vocab[b], vocab[a]
    start = max([*vocab.values(), *(t["id"] for t in tj["added_tokens"])]) + 1
    for i in range(extra):
        tj["added_tokens"].append({"id": start + i, "content": f"<extra_{i}>", "single_word": False, "lstrip": False,
                                   "rstrip": False, "normalized": False, "special": True})
    with open(path, "w") as f:
        json.dump(tj, f)
    return dst


def _task_files(tmp_path) -> tuple[str, str]:
    rows = [{"sentence": d[:200], "label": i % 2} for i, d in enumerate(documents()[:8])]
    paths = []
    for name in ("train", "validation"):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(p))
    return paths[0], paths[1]


def test_export_refuses_a_non_empty_out_and_overwrite_replaces_it_whole(trained, tmp_path):
    from flexbert.data.outputs import OutputError
    from flexbert.weights.export import export_to_hf

    cfg, _ = trained
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        export_to_hf(str(out), run_dir=cfg["run_dir"])
    assert (out / "notes.txt").read_text() == "mine" and not (out / "config.json").exists()
    export_to_hf(str(out), run_dir=cfg["run_dir"], overwrite=True)
    assert (out / "modules.json").exists() and not (out / "notes.txt").exists()
    export_to_hf(str(out), run_dir=cfg["run_dir"], pooling="none", overwrite=True)
    assert (out / "config.json").exists() and not (out / "modules.json").exists()  # no stale sentence-transformers file


def test_no_tool_writes_over_the_run_it_reads(trained, tmp_path):
    from flexbert.data.outputs import OutputError
    from flexbert.eval.finetune import FinetuneConfig, run_finetune
    from flexbert.weights.averaging import average_checkpoints, best_checkpoints
    from flexbert.weights.export import export_to_hf
    from flexbert.weights.tiling import write_tiled

    cfg, config = trained
    run, ckpts = cfg["run_dir"], cfg["save_folder"]
    before = _snapshot(run, ckpts)
    paths = best_checkpoints(run, 1)
    for out in (run, os.path.dirname(run), ckpts):
        with pytest.raises(OutputError, match="write the output somewhere else"):
            average_checkpoints(paths, out, overwrite=True)
        with pytest.raises(OutputError, match="write the output somewhere else"):
            export_to_hf(out, run_dir=run, overwrite=True)
        with pytest.raises(OutputError, match="write the output somewhere else"):
            write_tiled(run, config, out, overwrite=True)
    train, validation = _task_files(tmp_path)
    with pytest.raises(OutputError, match="write the output somewhere else"):
        run_finetune(FinetuneConfig(model=run, train=train, validation=validation, out=run, overwrite=True, epochs=1))
    assert _snapshot(run, ckpts) == before
    average_checkpoints(paths, os.path.join(run, "avg"))  # inside the run folder is fine: nothing there is replaced
    assert {k: v for k, v in _snapshot(run, ckpts).items() if "/avg/" not in k} == before


def test_every_model_folder_comes_from_the_one_writer(trained, tmp_path, monkeypatch):
    """Export, averaging, merging, tiling and fine-tuning write through flexbert/weights/writer.py:
    each output carries its record (one schema) and every tool that writes a tokenizer checks it
    through the writer's one check."""
    from flexbert.eval.evaluation import run_evaluation
    from flexbert.eval.finetune import FinetuneConfig
    from flexbert.weights import writer as W
    from flexbert.weights.averaging import average_checkpoints, best_checkpoints
    from flexbert.weights.export import export_to_hf
    from flexbert.weights.merging import merge_models
    from flexbert.weights.tiling import write_tiled

    checked = []
    real = W.check_tokenizer
    monkeypatch.setattr(W, "check_tokenizer", lambda *a: (checked.append(a[3]), real(*a))[1])
    cfg, config = trained
    run = cfg["run_dir"]
    hf = str(tmp_path / "hf")
    export_to_hf(hf, run_dir=run)
    average_checkpoints(best_checkpoints(run, 1), str(tmp_path / "avg"))
    merge_models("linear", [hf, hf], str(tmp_path / "merged"))
    write_tiled(run, config, str(tmp_path / "tiled"), overrides=["model.num_hidden_layers=3"])
    train, validation = _task_files(tmp_path)
    run_evaluation("classification", FinetuneConfig(model=hf, train=train, validation=validation, out=str(tmp_path / "ft"),
                                                    epochs=1, batch_size=8, max_seq_len=32))
    outputs = {"export": hf, "average": "avg", "merge": "merged", "tile": "tiled", "finetune": "ft/hf"}
    fingerprint = W.read_record(hf)["tokenizer_fingerprint"]
    assert fingerprint
    for tool, out in outputs.items():
        rec = W.read_record(str(tmp_path / out))
        assert rec is not None, f"{tool}: no {W.RECORD}"
        assert set(rec) == {"tool", "format", "sources", "tokenizer", "tokenizer_fingerprint", "settings", "written"}
        assert rec["tool"] == tool and rec["format"] in W.FORMATS and rec["sources"], rec
        assert rec["tokenizer_fingerprint"] == fingerprint, (tool, rec)  # the same tokenizer all along
    assert W.read_record(str(tmp_path / "avg"))["format"] == "run-folder"
    # every tool that writes a tokenizer with its model checked it through the writer (averaging writes none)
    assert [c.split()[0] for c in checked] == ["checkpoint", "model", "--from", "model"], checked


def test_a_tokenizer_other_than_the_models_is_refused_by_every_tool(trained, tmp_path, data):
    from flexbert.data.fingerprint import TokenizerMismatchError
    from flexbert.data.shards import ShardOptions, tokenize_to_mds
    from flexbert.eval.finetune import FinetuneConfig, run_finetune
    from flexbert.weights.export import export_to_hf
    from flexbert.weights.tiling import write_tiled
    from scripts.eval_mlm import main as eval_mlm

    cfg, config = trained
    run = cfg["run_dir"]
    other = _tokenizer_variant(os.path.join(data, "tokenizer"), str(tmp_path / "other"), swap=True)
    with pytest.raises(TokenizerMismatchError, match=f"tokenizer mismatch: checkpoint .* tokenizer {other} uses"):
        export_to_hf(str(tmp_path / "hf"), run_dir=run, tokenizer=other)
    assert not (tmp_path / "hf").exists()
    with pytest.raises(TokenizerMismatchError, match="tokenizer mismatch: --from"):
        write_tiled(run, config, str(tmp_path / "tiled"), tokenizer=other)
    train, validation = _task_files(tmp_path)
    with pytest.raises(TokenizerMismatchError, match="tokenizer mismatch: model"):
        run_finetune(FinetuneConfig(model=run, train=train, validation=validation, out=str(tmp_path / "ft"),
                                    tokenizer=other, epochs=1))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents()[:40]))
    shards = str(tmp_path / "other_shards")
    tokenize_to_mds([str(corpus)], other, shards, ShardOptions(max_seq_len=128, val_fraction=0.5, progress=False))
    assert eval_mlm(["--model", run, "--data", shards, "--max-batches", "1"]) == 2
    assert eval_mlm(["--model", run, "--data", data, "--max-batches", "1"]) == 0  # the model's own shards pass


def test_a_tokenizer_larger_than_the_model_is_one_line(trained, tmp_path, data):
    from transformers import AutoTokenizer

    from flexbert.weights.load import ModelLoadError, load_pretrained
    from flexbert.weights.writer import WriteError, check_tokenizer

    cfg, _ = trained
    big = _tokenizer_variant(os.path.join(data, "tokenizer"), str(tmp_path / "big"), extra=8)
    tok = AutoTokenizer.from_pretrained(big)
    vocab = cfg["model"]["vocab_size"]
    assert len(tok) > vocab
    with pytest.raises(WriteError, match=f"has {len(tok)} tokens, more than .*vocab_size={vocab}"):
        check_tokenizer(tok, big, None, "checkpoint x", vocab)
    check_tokenizer(tok, big, None, "checkpoint x", len(tok))  # the same tokenizer fits a big enough model
    pre = load_pretrained(cfg["run_dir"])
    assert pre.tokenizer_fingerprint  # the run recorded what it was trained with
    with pytest.raises(ModelLoadError, match=f"has {len(tok)} tokens, more than model"):
        pre.check_tokenizer(None, f"tokenizer {big}", len(tok))


def test_each_tool_names_overwrite_in_its_help(capsys):
    from scripts.average_checkpoints import main as average
    from scripts.export_hf import main as export
    from scripts.finetune import main as finetune
    from scripts.tile_weights import main as tile

    for tool in (average, export, finetune, tile):
        with pytest.raises(SystemExit):
            tool(["--help"])
        assert "--overwrite" in capsys.readouterr().out


def test_a_rerun_on_other_shards_or_init_from_another_tokenizer_refuses(trained, tmp_path, data):
    from flexbert.data.fingerprint import TokenizerMismatchError, tokenizer_fingerprint
    from flexbert.data.source import data_digest, resolve_source
    from flexbert.train.builders import tokenizer_identity
    from flexbert.train.config import load_run_config
    from flexbert.weights.export import export_to_hf
    from flexbert.train.run_folder import RunFolder
    from flexbert.train.run_identity import ConfigChanged, check_rerun

    cfg, config = trained
    run = RunFolder(cfg["run_dir"])
    recorded = run.data_identity()
    assert recorded["tokenizer"] and recorded["shards"]
    moved = str(tmp_path / "moved")
    shutil.copytree(data, moved)  # the same shards elsewhere: a resume may read them there
    moved_cfg = load_run_config(config, [f"data.local={moved}"])
    assert check_rerun(run, moved_cfg, {"tokenizer": recorded["tokenizer"], "shards": data_digest(moved_cfg.data)}) is not None
    with pytest.raises(ConfigChanged, match="was trained on other data: its shards"):
        check_rerun(run, moved_cfg, {"tokenizer": recorded["tokenizer"], "shards": "0123456789abcdef"})
    other = _tokenizer_variant(os.path.join(data, "tokenizer"), str(tmp_path / "other"), swap=True)
    with pytest.raises(ConfigChanged, match="its tokenizer"):
        check_rerun(run, moved_cfg, {"tokenizer": tokenizer_fingerprint(other), "shards": recorded["shards"]})

    hf = str(tmp_path / "hf")
    export_to_hf(hf, run_dir=run.path)
    start = load_run_config(config, [f"init_from={hf}", f"run_dir={tmp_path / 'new'}"])
    assert tokenizer_identity(start, resolve_source(start.data)) == recorded["tokenizer"]  # an export of the same tokenizer starts fine
    shutil.copy(os.path.join(other, "tokenizer.json"), os.path.join(hf, "tokenizer.json"))
    with pytest.raises(TokenizerMismatchError, match=f"init_from {hf} uses tokenizer"):
        tokenizer_identity(start, resolve_source(start.data))


@pytest.mark.parametrize("keep_moments", [True, False], ids=["optimizer-kept", "optimizer-reset"])
def test_rollback_starts_at_the_chosen_checkpoint_with_the_new_lr(trained, tmp_path, keep_moments):
    """The plateau recipe: a new run folder continues from an earlier checkpoint of a run with a lower
    LR (clock and data position kept); its first logged step is the checkpoint's next batch at the new LR."""
    import torch

    from test_train_fixtures import build_and_fit, read_jsonl

    cfg, _ = trained
    chosen = os.path.join(cfg["save_folder"], "ba2.pt")
    new = dict(cfg, run_dir=str(tmp_path / "rollback"), save_folder=None, load_path=chosen,
               load_optimizer_state=keep_moments, optimizer=dict(cfg["optimizer"], lr=1e-4), max_duration="3ba",
               eval_interval="1000ba")
    run = build_and_fit(new)
    first = read_jsonl(os.path.join(new["run_dir"], "metrics.jsonl"))[0]
    assert first["batch"] == 3 and first["lr"] == pytest.approx(1e-4)  # past warmup: the constant LR, the new one
    opt = run.trainer.state.optimizers[0]
    steps = {int(torch.as_tensor(g["step"])) for g in opt.param_groups if "step" in g}
    steps |= {int(torch.as_tensor(s["step"])) for s in opt.state.values() if "step" in s}
    assert steps == ({3} if keep_moments else {1})  # the moments went on from batch 2, or started anew
