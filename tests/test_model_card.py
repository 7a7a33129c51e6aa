"""The exported model card lists the real run, and continued pretraining from a released-format
ModernBERT folder (transformers' save_pretrained) through ``init_from``."""

import os
import subprocess

import pytest
import torch

from test_train_fixtures import PY, ROOT, build_and_fit, read_jsonl, run_config


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("card")
    first = run_config(tmp, data, run_dir=str(tmp / "p1"), max_duration="3ba", save_interval="3ba")
    build_and_fit(first)
    second = run_config(tmp, data, run_dir=str(tmp / "p2"), max_duration="2ba", save_interval="2ba",
                        load_path=str(tmp / "p1" / "checkpoints" / "ba3.pt"), reset_time=True,
                        optimizer={"lr": 7e-4}, run_name="second-phase")
    build_and_fit(second)
    return tmp


def test_model_card_lists_the_real_training_config(tmp_path, two_phase_run):
    out = tmp_path / "hf"
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/export_hf.py"), "--run-dir", str(two_phase_run / "p2"),
                        "--out", str(out)], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=180)
    assert r.returncode == 0, r.stderr
    card = (out / "README.md").read_text()
    config_text = (two_phase_run / "p2" / "config.yaml").read_text().rstrip()
    assert config_text in card  # verbatim
    tokens = [x for x in read_jsonl(two_phase_run / "p2" / "metrics.jsonl") if x["kind"] == "train"][-1]["tokens"]
    assert f"This run: {tokens:,} tokens in 2 batches" in card
    rows = [line for line in card.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and "| t |" in rows[0] and "| second-phase |" in rows[1] and "| 0.0007 |" in rows[1]
    assert "ba3.pt" in rows[1]  # phase 2 started from phase 1's checkpoint
    from transformers import AutoModelForMaskedLM

    n_params = sum(p.numel() for p in AutoModelForMaskedLM.from_pretrained(str(out)).parameters())
    assert f"| parameters | {n_params:,} |" in card
    assert "SentenceTransformer" in card and "AutoModelForMaskedLM.from_pretrained" in card
    from huggingface_hub import ModelCard

    assert card.startswith("---\n")  # the Hub's metadata header, as the Hub reads it
    meta = ModelCard.load(str(out / "README.md")).data
    assert meta.library_name == "transformers" and meta.pipeline_tag == "fill-mask" and "modernbert" in meta.tags


def test_push_to_hub_exports_then_says_in_one_line_that_the_hub_did_not_take_it(tmp_path, trained, monkeypatch, capsys):
    """No network here: a Hub endpoint nobody answers on stands for it.  The export is written and
    its card names the repo; the failed upload is one line saying where the folder is and how to
    push it later.  A repo id the Hub would refuse stops before anything is written."""
    import socket

    from flexbert.cli.export import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_flexbert_test")
    cfg, _ = trained
    out = tmp_path / "hf"
    assert main(["--run-dir", cfg["run_dir"], "--out", str(out), "--push-to-hub", "me/tiny-bert"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: --push-to-hub me/tiny-bert: the Hub at http://127.0.0.1:{port} "
                                               "did not take it (") and "Traceback" not in err[0]
    assert err[0].endswith(f"the export is in {out}: push it later with `huggingface-cli upload me/tiny-bert {out}` "
                           "(after `huggingface-cli login`)")
    assert (out / "config.json").exists() and 'AutoModelForMaskedLM.from_pretrained("me/tiny-bert")' in (out / "README.md").read_text()
    assert main(["--run-dir", cfg["run_dir"], "--out", str(tmp_path / "x"), "--push-to-hub", "tiny bert"]) == 2
    assert "--push-to-hub tiny bert: not a Hub repo id" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_loads_in_sentence_transformers_with_flexberts_embeddings(tmp_path, two_phase_run, pooling):
    """SentenceTransformer(export) needs no extra code and embeds as FlexBERT's own encoder does."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from flexbert.model.model import FlexBertForMaskedLM
    from flexbert.train.config import load_run_config
    from flexbert.train.run_folder import checkpoint_model_state

    out = tmp_path / "st"
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/export_hf.py"), "--run-dir", str(two_phase_run / "p2"),
                        "--out", str(out), "--pooling", pooling], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=180)
    assert r.returncode == 0, r.stderr
    st = SentenceTransformer(str(out), device="cpu")
    assert st[1].get_pooling_mode_str() == pooling and st.max_seq_length == 128
    texts = ["the cat sat on the mat", "a much longer sentence about the weather and the sea, to pad the other", "hi"]
    got = st.encode(texts, convert_to_tensor=True, batch_size=3)

    cfg = load_run_config(str(two_phase_run / "p2" / "config.yaml"))
    model = FlexBertForMaskedLM(cfg.model)
    model.load_state_dict(checkpoint_model_state(str(two_phase_run / "p2" / "checkpoints" / "ba2.pt")), strict=False)
    enc = AutoTokenizer.from_pretrained(str(out))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model.eval().model(enc["input_ids"], enc["attention_mask"])  # (B, S, H)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = (h * mask).sum(1) / mask.sum(1) if pooling == "mean" else h[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_export_without_pooling_writes_no_sentence_transformers_files(tmp_path, two_phase_run):
    out = tmp_path / "plain"
    r = subprocess.run([PY, os.path.join(ROOT, "scripts/export_hf.py"), "--run-dir", str(two_phase_run / "p2"),
                        "--out", str(out), "--pooling", "none"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=180)
    assert r.returncode == 0, r.stderr
    assert not (out / "modules.json").exists() and not (out / "1_Pooling").exists()
    assert "models.Pooling" in (out / "README.md").read_text()


def test_continue_pretraining_from_a_released_format_modernbert(tmp_path, data):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    hf_cfg = ModernBertConfig(vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=2, local_attention=32, global_attn_every_n_layers=2,
                              pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)
    torch.manual_seed(3)
    released = ModernBertForMaskedLM(hf_cfg).eval()
    with torch.no_grad():  # every tensor away from its init (a decoder bias of zeros, norms of ones
        for p in released.parameters():  # would be "imported" by a loader that skips them)
            p.add_(torch.randn_like(p) * 0.1)
    released.save_pretrained(str(tmp_path / "released"))
    ids = torch.randint(5, 1024, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.no_grad():
        want = released(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    cfg = run_config(tmp_path, data, init_from=str(tmp_path / "released"), max_duration="4ba")
    cfg["model"].update(norm_bias=False, attn_qkv_bias=False, attn_out_bias=False, mlp_in_bias=False,
                        mlp_out_bias=False, head_bias=False)
    from flexbert.config import from_dict
    from flexbert.train.builders import build_trainer
    from flexbert.train.config import RunConfig

    run = build_trainer(from_dict(RunConfig, cfg, ""))
    try:
        # the imported model computes the released one's logits (measured: max difference 0.0);
        # import skipping the decoder bias moves them by 0.32, skipping the final norm by 0.48
        # (planted on this case, docs/planted-defects.md): 1e-3 tells them apart
        flex = run.model.model.eval()
        with torch.no_grad():
            got = flex(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        assert float((got - want).abs().max()) < 1e-3, float((got - want).abs().max())
        k = "layers.1.attn.Wqkv.weight"
        mine = {n: t.clone() for n, t in run.model.model.state_dict().items()}
        theirs = released.state_dict()
        # every tensor is the released one (names map one to one; the decoder is tied to the embeddings)
        assert set(mine) - {"decoder.weight"} == set(theirs) - {"decoder.weight"}
        for name, t in theirs.items():
            assert torch.equal(mine[name], t), name
        loaded = mine["model." + k]
        run.fit()
        assert not torch.equal(run.model.model.model.state_dict()[k], loaded)  # and they trained
    finally:
        run.close()
    losses = [x["loss/train/total"] for x in read_jsonl(tmp_path / "run" / "metrics.jsonl") if x["kind"] == "train"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
