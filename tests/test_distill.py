"""Distillation (``teacher:`` in the run config, flexbert/train/pretrained.py): the KL term is the
definition with its gradients, a student equal to its teacher has KL 0, a teacher of another
tokenizer or vocabulary is refused in one line naming ``teacher.model``, and a distilled run logs
its loss terms and resumes exactly.  (Two ranks: tests/test_ddp.py; the with-teacher-better row:
docs/ablations.md.)"""


import pytest
import torch
import torch.nn.functional as F

from test_train_fixtures import build_and_fit, read_jsonl, run_config

from flexbert.config import ConfigError
from flexbert.model.loss import distill_kl
from flexbert.train.config import TeacherConfig, load_run_config


def test_distill_kl_is_the_definition_with_gradients():
    torch.manual_seed(0)
    n, hidden, vocab, temperature = 37, 16, 50, 2.0
    h, w, b = (torch.randn(*s, requires_grad=True) for s in ((n, hidden), (vocab, hidden), (vocab,)))
    ht, wt, bt = torch.randn(n, hidden), torch.randn(vocab, hidden), torch.randn(vocab)
    labels = torch.randint(0, vocab, (n,))
    labels[::3] = -100
    got = distill_kl(h, w, b, ht, wt, bt, labels, temperature, chunk=8)
    keep = labels != -100
    student = F.log_softmax((h @ w.T + b)[keep] / temperature, -1)
    teacher = F.log_softmax((ht @ wt.T + bt)[keep] / temperature, -1)
    want = F.kl_div(student, teacher, log_target=True, reduction="sum")  # KL(teacher || student)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got, (h, w, b))
    for g, r in zip(grads, torch.autograd.grad(want, (h, w, b))):
        torch.testing.assert_close(g, r)
    assert distill_kl(ht, wt, bt, ht, wt, bt, labels, temperature) == 0  # the student is the teacher


def test_bad_teacher_settings_are_one_line_naming_the_key():
    for override, key in (("teacher.weight=0", "teacher.weight"), ("teacher.temperature=-1", "teacher.temperature")):
        with pytest.raises(ConfigError, match=f"^{key}: "):
            load_run_config(None, ["teacher.model=x", override])
    with pytest.raises(ConfigError, match="^teacher.model: required"):
        load_run_config(None, ["teacher.temperature=2.0"])


@pytest.fixture(scope="module")
def teacher_run(trained):
    return trained[0]["run_dir"]


def test_a_student_equal_to_its_teacher_has_kl_zero(teacher_run, data, tmp_path):
    from flexbert.data.loader import build_eval_loader
    from flexbert.data.source import data_fingerprint
    from flexbert.train.config import config_from_dict
    from flexbert.train.pretrained import load_teacher
    from flexbert.train.pretrained import load_pretrained, mlm_model

    cfg = config_from_dict(run_config(tmp_path, data))
    teacher = load_teacher(TeacherConfig(teacher_run, temperature=2.0, weight=0.25), data_fingerprint(cfg.data), 1024)
    student = mlm_model(load_pretrained(teacher_run))  # the same weights (eval mode: no dropout)
    row = next(iter(build_eval_loader(cfg.data)))["rows"][0]
    shape = dict(cu_seqlens=row["cu_seqlens"], max_seqlen=int(row["max_seqlen"]))
    out = teacher.outputs(student, row, shape, causal=False)
    assert out.terms["kl"] == 0 and out.stats.count > 0
    torch.testing.assert_close(out.loss, 0.75 * out.terms["ce"])
    other = mlm_model(load_pretrained(teacher_run))
    with torch.no_grad():
        other.decoder.bias.add_(torch.randn_like(other.decoder.bias))
    assert teacher.outputs(other, row, shape, causal=False).terms["kl"] > 0


def test_a_teacher_of_another_tokenizer_or_vocabulary_is_refused(teacher_run, tmp_path):
    from flexbert.train.pretrained import load_teacher
    from flexbert.train.loading import SetupError

    cfg = TeacherConfig(teacher_run)
    for fingerprint, vocab, what in (("0123456789abcdef", 1024, "tokenizer mismatch"), (None, 2048, "vocab_size 1024")):
        with pytest.raises(SetupError) as e:
            load_teacher(cfg, fingerprint, vocab)
        assert str(e.value).startswith(f"teacher.model: ") and what in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SetupError, match="^teacher.model: .* does not exist"):
        load_teacher(TeacherConfig(str(tmp_path / "nothing")), None, 1024)


def _distilled(tmp_path, data, teacher_run, name, batches):
    return run_config(tmp_path, data, run_dir=str(tmp_path / name), max_duration=f"{batches}ba", save_interval="2ba",
                      model={"num_hidden_layers": 1, "attn_out_dropout": 0.1},
                      teacher={"model": teacher_run, "temperature": 2.0, "weight": 0.5})


def test_a_distilled_run_logs_its_terms_and_resumes_exactly(tmp_path, data, teacher_run):
    build_and_fit(_distilled(tmp_path, data, teacher_run, "ref", 6))
    build_and_fit(_distilled(tmp_path, data, teacher_run, "split", 3))
    second = build_and_fit(_distilled(tmp_path, data, teacher_run, "split", 6))
    assert second.plan.kind == "resume" and second.model.teacher.path.endswith("ba4.pt")

    def records(name):
        return [r for r in read_jsonl(tmp_path / name / "metrics.jsonl") if r["kind"] == "train"]

    ref, split = records("ref"), records("split")
    keys = ("loss/train/total", "loss/train/ce", "loss/train/kl")
    assert [[r[k] for k in keys] for r in split] == [[r[k] for k in keys] for r in ref] and len(ref) == 6
    for r in ref:  # total = (1 - w) CE + w T^2 KL; the KL of a 1-layer student against its teacher
        assert r[keys[0]] == pytest.approx(0.5 * r[keys[1]] + 0.5 * 4.0 * r[keys[2]], rel=1e-5) and r[keys[2]] > 0
    a, b = (torch.load(tmp_path / n / "checkpoints" / "ba6.pt", map_location="cpu", weights_only=False)["state"]["model"]
            for n in ("ref", "split"))
    assert a.keys() == b.keys() and not any("teacher" in k for k in a)  # the teacher is in no checkpoint
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
