"""flexbert eval-niah (flexbert/eval/niah.py, scripts/eval_niah.py) on a real FlexBERT trained here
for a few hundred steps on the needle task itself, where the needle is trivially recoverable (its
value is one token of 16 that never occur in the filler): the model fills the value in at every
length and depth; the same model reading only the last 128 tokens of each input scores near zero
on the needles further away than that and well on the nearer ones; bad input is one line."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from test_train_fixtures import model_overrides

from flexbert.eval.evaluation import read_result
from flexbert.experiments.plots import is_png

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

WINDOW = 128
STEPS = 400


class LastTokens(torch.nn.Module):
    """A model that cannot see past ``window`` tokens: each input cut to its last ``window`` tokens
    (the question is at the end) before ``inner`` reads it."""

    def __init__(self, inner, window: int):
        super().__init__()
        self.inner, self.window = inner, window

    def token_losses(self, input_ids, labels, cu_seqlens, max_seqlen):
        bounds = list(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()))
        keep = torch.cat([torch.arange(max(s, e - self.window), e) for s, e in bounds])
        lengths = [min(self.window, e - s) for s, e in bounds]
        cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
        loss, hit, pos = self.inner.token_losses(input_ids[keep], labels[keep], cu, max(lengths))
        return loss, hit, keep[pos]


@pytest.fixture(scope="module")
def needle_model(tmp_path_factory, data):
    """(model folder, filler file, values): a 2-layer FlexBERT, every layer global, trained with
    AdamW on packed rows of 8 needles of 40-160 tokens at random depths, single-threaded (~20 s)."""
    from flexbert.convert.hf import to_hf
    from flexbert.data.tokenizer import SpecialTokens, load_tokenizer
    from flexbert.eval.niah import filler_ids, make_needle, packed_row
    from flexbert.model import FlexBertForMaskedLM
    from flexbert.model.config import FlexBertConfig

    root = tmp_path_factory.mktemp("niah")
    tok_dir = os.path.join(data, "tokenizer")
    tok = load_tokenizer(tok_dir)
    special = SpecialTokens.from_tokenizer(tok)
    words = sorted({t[1:] for t in tok.get_vocab() if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) > 4})
    rng = np.random.default_rng(0)
    rng.shuffle(words)
    values, fill_words = words[:16], words[16:80]  # single tokens each; the filler never holds a value
    filler = root / "filler.txt"
    filler.write_text("".join(" ".join(rng.choice(fill_words, 12)) + ".\n" for _ in range(300)))
    ids = filler_ids(tok, str(filler), 4096)
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(FlexBertConfig.from_dict(model_overrides(hidden=32, global_attn_every_n_layers=1)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(STEPS):
            needles = [make_needle(rng, tok, special, ids, values, int(rng.integers(40, 161)), float(rng.random()))
                       for _ in range(8)]
            loss = model(**packed_row(needles)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    to_hf(model.eval(), root / "hf", tokenizer=os.path.join(tok_dir, "tokenizer.json"))
    return str(root / "hf"), str(filler), values


def test_the_needle_and_the_question_sit_where_the_input_says(data):
    """The generator itself (the model below learns whatever it is given, so it cannot check it):
    exactly ``length`` tokens, the masks where ``at`` says and nowhere else, the value ``distance``
    tokens before them in the needle, the question repeating the needle's words, the needle right
    after [CLS] at depth 0 and right before the question at depth 1."""
    from flexbert.data.tokenizer import SpecialTokens, load_tokenizer
    from flexbert.eval.niah import filler_ids, make_needle

    tok = load_tokenizer(os.path.join(data, "tokenizer"))
    special = SpecialTokens.from_tokenizer(tok)
    ids = filler_ids(tok, None, 2048)  # the default filler: Python's documentation
    rng = np.random.default_rng(3)
    dot = tok.encode(".", add_special_tokens=False).ids
    for depth in (0.0, 0.5, 1.0):
        n = make_needle(rng, tok, special, ids, ["417", "zebra crossing"], 200, depth)
        k, value_at = len(n.value), n.at - n.distance
        head = n.ids[n.needle_at:value_at]
        assert len(n.ids) == 200 and n.ids[0] == special.cls_id and n.ids[-1] == special.sep_id
        assert n.ids[n.at:n.at + k] == [special.mask_id] * k and n.ids.count(special.mask_id) == k
        assert n.ids[value_at:value_at + k] == n.value and tok.decode(n.value).strip() in ("417", "zebra crossing")
        assert tok.decode(head).strip().startswith("The secret number of") and n.ids[n.at - len(head):n.at] == head
        assert n.ids[value_at + k:value_at + k + len(dot)] == dot and n.ids[n.at + k:n.at + k + len(dot)] == dot
        if depth == 0.0:
            assert n.needle_at == 1
        if depth == 1.0:
            assert n.at - len(head) == value_at + k + len(dot)  # the question follows the needle


def test_a_model_that_reads_everything_fills_in_the_value(needle_model, tmp_path, capsys):
    from eval_niah import main

    folder, filler, values = needle_model
    out = tmp_path / "niah"
    args = ["--model", folder, "--filler", filler, "--values", *values, "--lengths", "64", "128", "256",
            "--depths", "0", "0.5", "1", "--samples", "8", "--out", str(out)]
    assert main(args) == 0
    assert "length \\ depth" in capsys.readouterr().out
    result = read_result(str(out))
    table = result.details["table"]
    assert [(r["length"], r["depth"]) for r in table] == [(n, d) for n in (64, 128, 256) for d in (0.0, 0.5, 1.0)]
    assert all(r["needles"] == 8 and r["value_tokens"] == 8 for r in table)
    assert all(r["accuracy"] >= 0.75 for r in table), table
    assert result.metric("test_accuracy") >= 0.9 and result.metric("test_accuracy@256") >= 0.75
    assert is_png(str(out / "niah.png"))
    far = next(r for r in table if r["length"] == 256 and r["depth"] == 0.0)
    assert far["distance"] > 230  # the needle at depth 0 is across the whole input from the question
    assert main(args + ["--json", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == table  # the same needles every run


def test_a_model_that_cannot_see_past_128_tokens_scores_near_zero_beyond(needle_model):
    from flexbert.data.tokenizer import SpecialTokens, load_tokenizer
    from flexbert.eval.niah import filler_ids, make_needle, score_needles
    from flexbert.weights.load import load_model

    folder, filler, values = needle_model
    model = load_model(folder, "mlm").model
    tok = load_tokenizer(folder)
    ids = filler_ids(tok, filler, 4096)
    rng = np.random.default_rng(1)
    needles = [make_needle(rng, tok, SpecialTokens.from_tokenizer(tok), ids, values, n, d)
               for n in (96, 192, 384) for d in np.linspace(0, 1, 12)]
    seen = [len(n.ids) - (n.at - n.distance) <= WINDOW for n in needles]  # the value within the last 128 tokens
    full, cut = score_needles(model, needles), score_needles(LastTokens(model, WINDOW), needles)

    def accuracy(hits, which):
        picked = [h[0] for h, s in zip(hits, seen) if s == which]
        return sum(picked) / len(picked), len(picked)

    far, n_far = accuracy(cut, False)
    near, n_near = accuracy(cut, True)
    assert n_far >= 10 and n_near >= 10
    assert far <= 0.2 and near >= 0.8, (far, near)  # chance is 1/16
    assert accuracy(full, False)[0] >= 0.8  # the same needles, read whole: it is the cut that loses them


def test_bad_input_is_one_line(needle_model, tmp_path, capsys):
    from eval_niah import main

    folder, filler, _ = needle_model
    for args, message in ((["--lengths", "16"], "lengths: 16 tokens cannot hold the needle and the question"),
                          (["--depths", "1.5"], "depths: fractions in [0, 1]"),
                          (["--filler", str(tmp_path / "none.txt")], "filler: "),
                          (["--tokenizer", str(tmp_path)], "no tokenizer.json")):
        assert main(["--model", folder, "--out", str(tmp_path / "out"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not (tmp_path / "out").exists(), err
