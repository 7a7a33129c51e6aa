"""The shipped configs validate and carry the paper's recipe values (facts §2)."""

import glob
import os

import pytest

from flexbert.config import ConfigError
from flexbert.data.source import resolve_source
from flexbert.train.config import load_run_config, with_data_source
from test_train_fixtures import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_validates(path):
    cfg = load_run_config(path)
    assert cfg.optimizer.name == "stable_adamw" and list(cfg.optimizer.betas) == [0.9, 0.98]
    assert cfg.optimizer.eps == 1e-6 and cfg.optimizer.decouple_lr
    assert cfg.data.mlm_probability == 0.30


def test_paper_values():
    c = lambda n: load_run_config(os.path.join(ROOT, "configs", f"{n}.yaml"))  # noqa: E731
    base, ext, decay = c("base"), c("base-context-extension"), c("base-decay")
    assert (base.model.num_hidden_layers, base.model.hidden_size, base.model.intermediate_size) == (22, 768, 1152)
    assert base.optimizer.lr == 8e-4 and base.optimizer.weight_decay == 1e-5 and base.max_duration == "1719Btok"
    assert base.scheduler == {"name": "constant_with_warmup", "t_warmup": "3Btok"}
    d = base.data
    assert (d.max_seq_len, d.microbatch_size, d.global_batch_size) == (1024, 48, 4608)  # paper's 96 OOMs: test_memory.py
    assert (d.batch_size_warmup_min, d.batch_size_warmup_tokens) == (768, 50_000_000_000)
    assert ext.model.global_rope_theta == 160000.0 and ext.model.local_rope_theta == 10000.0
    assert ext.optimizer.lr == 3e-4 and ext.max_duration == "250Btok" and ext.data.max_seq_len == 8192
    assert ext.data.global_batch_size == 72 and ext.reset_time and ext.load_path
    assert decay.scheduler["name"] == "one_minus_sqrt" and decay.scheduler["alpha_f"] == 0.001
    assert decay.max_duration == "50Btok" and decay.load_path.startswith("runs/base-context-extension/")
    large = c("large")
    assert (large.model.num_hidden_layers, large.model.hidden_size, large.model.intermediate_size) == (28, 1024, 2624)
    assert large.optimizer.lr == 5e-4 and large.scheduler["t_warmup"] == "2Btok" and large.init_from
    ld = large.data
    assert (ld.microbatch_size, ld.global_batch_size, ld.batch_size_warmup_min) == (28, 4928, 448)  # paper 56
    assert c("large-context-extension").optimizer.lr == 5e-5 and c("large-decay").optimizer.lr == 5e-5


def test_inherit_and_cross_field_checks(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"inherit: {os.path.join(ROOT, 'configs', 'tiny.yaml')}\nrun_name: child\nmodel:\n  norm: rmsnorm\n")
    cfg = load_run_config(str(child), ["optimizer.lr=1e-3"])
    assert cfg.run_name == "child" and cfg.model.norm == "rmsnorm" and cfg.model.hidden_size == 128
    assert cfg.optimizer.lr == 1e-3
    with pytest.raises(ConfigError, match="reset_time: only applies with load_path"):
        load_run_config(str(child), ["reset_time=true"])
    with pytest.raises(ConfigError, match="max_duration"):
        load_run_config(str(child), ["max_duration=0.5dur"])
    with pytest.raises(ConfigError, match="data.microbatch_size"):
        load_run_config(str(child), ["data.microbatch_size=0"])


def test_special_ids_come_from_the_tokenizer(data, tmp_path):
    """tiny.yaml names no special ids: they are read from the data's tokenizer ([PAD] 0 .. [MASK] 4)."""
    from flexbert.data.tokenizer import SpecialTokens

    special = SpecialTokens.from_dir(os.path.join(data, "tokenizer"))
    parsed = load_run_config(os.path.join(ROOT, "configs", "tiny.yaml"), [f"data.local={data}"])  # plain data: no file read
    cfg = with_data_source(parsed, resolve_source(parsed.data))
    m = cfg.model
    assert (m.pad_token_id, m.cls_token_id, m.sep_token_id, m.mask_token_id) == (
        special.pad_id, special.cls_id, special.sep_id, special.mask_id) == (0, 2, 3, 4)


def test_special_id_mismatch_is_one_clear_line(data, tmp_path):
    tiny = os.path.join(ROOT, "configs", "tiny.yaml")
    resolved = lambda ov: with_data_source(load_run_config(tiny, ov), resolve_source(load_run_config(tiny, ov).data))  # noqa: E731
    with pytest.raises(ConfigError) as e:
        resolved([f"data.local={data}", "model.mask_token_id=7"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.mask_token_id: 7 disagrees with the tokenizer at ")
    assert msg.endswith("([MASK] = 4); set it to 4 or leave it out"), msg
    with pytest.raises(ConfigError, match=r"^model.vocab_size: 512 is smaller than the tokenizer's vocabulary \(1024 at "):
        resolved([f"data.local={data}", "model.vocab_size=512"])


def test_train_py_reports_a_special_id_mismatch_in_one_line(data, tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), os.path.join(ROOT, "configs", "tiny.yaml"),
                          f"data.local={data}", "model.pad_token_id=1", "--print-config"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: model.pad_token_id: 1 disagrees with the tokenizer at {data}/tokenizer "
                     "([PAD] = 0); set it to 0 or leave it out"], out.stderr
