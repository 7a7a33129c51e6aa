"""``flexbert prune`` (flexbert/model/pruning.py, flexbert/weights/pruning.py): layer choices keep
the attention pattern valid or are refused in one line, the MLP keeps its largest units, nothing
dropped keeps the function exactly, and a pruned model trains, evaluates and exports."""

import os

import pytest
import torch

from test_train_fixtures import build_and_fit, read_jsonl, run_config

from flexbert.model.config import FlexBertConfig
from flexbert.model.model import FlexBertForMaskedLM
from flexbert.model.pruning import PruningError, pattern_every, prune_model, select_layers


def small(layers=6, every=3):
    torch.manual_seed(0)
    return FlexBertForMaskedLM(FlexBertConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                                              num_attention_heads=2, global_attn_every_n_layers=every, local_attention=8,
                                              pad_token_id=0, cls_token_id=1, sep_token_id=2, mask_token_id=3)).eval()


def test_layer_choices_and_the_attention_pattern():
    assert select_layers(6, every=2) == [0, 2, 4] and select_layers(6, keep=[4, 0]) == [0, 4]
    assert select_layers(22, depth=11) == list(range(0, 22, 2)) and select_layers(6, depth=1) == [0]
    cfg = small().config  # global every 3: G L L G L L
    assert [pattern_every(cfg, k) for k in ([0, 2, 4], [0, 3], [0, 1, 3, 4], [0, 1, 2, 3])] == [3, 1, 2, 3]
    base = FlexBertConfig()  # ModernBERT-base: 22 layers, G L L G L L ...
    assert pattern_every(base, select_layers(22, every=2)) == 3 and pattern_every(base, [0, 1, 3, 4, 6, 7]) == 2
    with pytest.raises(PruningError, match="G L L G L G L"):  # 22 -> 12 evenly spread (docs/training.md)
        pattern_every(base, select_layers(22, depth=12), "--depth")
    with pytest.raises(PruningError) as e:
        pattern_every(cfg, [0, 3, 4])
    assert str(e.value).startswith("--keep: layers [0, 3, 4] keep the attention kinds G G L, which no global_attn_every_n_layers")
    for kw, msg in ((dict(keep=[0, 6]), "--keep: layer 6 is out of range; the model has 6 layers (0..5)"),
                    (dict(keep=[0, 0]), "--keep: give each layer once"), (dict(depth=7), "--depth: must be in 1..6"),
                    (dict(every=2, depth=2), "give exactly one of --keep, --every, --depth")):
        with pytest.raises(PruningError, match="^" + msg.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            select_layers(6, **kw)
    with pytest.raises(PruningError, match="^--keep: keep layer 0"):
        prune_model(small(), [3, 4])


def test_nothing_dropped_is_the_same_function_and_the_weakest_units_go():
    src = small()
    ids = torch.randint(4, 128, (2, 24))
    same = prune_model(src, select_layers(6, keep=list(range(6))))
    assert (same(input_ids=ids).logits - src(input_ids=ids).logits).abs().max() == 0
    with torch.no_grad():
        src.model.layers[1].mlp.Wo.weight[:, 7] = 0  # unit 7 of layer 1 contributes nothing
    pruned = prune_model(src, [0, 1, 3, 4], mlp_width=95)
    assert pruned.config.num_hidden_layers == 4 and pruned.config.global_attn_every_n_layers == 2
    assert (pruned(input_ids=ids).logits - prune_model(src, [0, 1, 3, 4])(input_ids=ids).logits).abs().max() > 0
    kept_wo = pruned.model.layers[1].mlp.Wo.weight
    torch.testing.assert_close(kept_wo, torch.cat([src.model.layers[1].mlp.Wo.weight[:, :7],
                                                   src.model.layers[1].mlp.Wo.weight[:, 8:]], 1), rtol=0, atol=0)
    gate = src.model.layers[1].mlp.Wi.weight[96:]
    torch.testing.assert_close(pruned.model.layers[1].mlp.Wi.weight[95:], torch.cat([gate[:7], gate[8:]]), rtol=0, atol=0)


def test_the_command_refuses_a_layer_out_of_range_in_one_line(trained, tmp_path, capsys):
    from flexbert.cli.prune import main

    out = tmp_path / "pruned"
    assert main(["--from", trained[0]["run_dir"], "--keep", "0,9", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --keep: layer 9 is out of range; the model has 2 layers (0..1)\n"
    assert not out.exists()


def test_a_pruned_model_keeps_the_function_trains_evaluates_and_exports(trained, data, tmp_path):
    from transformers import AutoModelForMaskedLM

    from flexbert.eval.evaluation import run_evaluation
    from flexbert.weights.export import export_to_hf
    from flexbert.weights.load import load_model
    from flexbert.weights.pruning import write_pruned

    src_dir = trained[0]["run_dir"]
    ids = torch.randint(5, 1000, (2, 40))
    source = load_model(src_dir, "mlm").model
    whole = write_pruned(src_dir, str(tmp_path / "whole"), keep=[0, 1])  # nothing dropped: the same function
    assert (load_model(whole["init_from"], "mlm").model(input_ids=ids).logits - source(input_ids=ids).logits).abs().max() == 0

    info = write_pruned(src_dir, str(tmp_path / "pruned"), every=2, mlp_width=64)
    assert info["layers"] == [0] and info["overrides"] == ["model.num_hidden_layers=1", "model.intermediate_size=64",
                                                          "model.global_attn_every_n_layers=1"]
    pruned = load_model(info["init_from"], "mlm").model
    hf = AutoModelForMaskedLM.from_pretrained(info["init_from"], attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - pruned(input_ids=ids).logits).abs().max() < 1e-4
    overrides = {k.split("=")[0].split(".")[1]: int(k.split("=")[1]) for k in info["overrides"]}
    cfg = run_config(tmp_path, data, init_from=info["init_from"], max_duration="2ba", eval_interval="2ba",
                     eval_subset_num_batches=2, save_interval="2ba", model=overrides)
    build_and_fit(cfg)
    last = [r for r in read_jsonl(os.path.join(cfg["run_dir"], "metrics.jsonl")) if r["kind"] == "train"][-1]
    assert last["batch"] == 2 and 0 < last["metrics/eval/MLMLoss"] < 20
    result = run_evaluation("mlm", {"model": info["init_from"], "data": data, "max_batches": 2})
    assert 0 < result.metrics["validation"]["loss"] < 20
    export_to_hf(str(tmp_path / "hf"), run_dir=cfg["run_dir"])
    trained_model = load_model(cfg["run_dir"], "mlm").model
    hf = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf"), attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - trained_model(input_ids=ids).logits).abs().max() < 1e-4
