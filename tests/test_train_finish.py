"""How `flexbert train` ends: its training lines carry an ETA, the final evaluation is printed and
says what it was measured on, the "done" line names the checkpoint and the next commands, the
doctor's verdict gives no GPU advice on a CPU run, and `flexbert diagnose` says exactly the same."""

import os

import yaml

from test_train_fixtures import run_config


def test_flexbert_train_ends_with_the_final_evaluation_the_checkpoint_and_the_next_step(tmp_path, data, capsys):
    from flexbert.cli import diagnose, train

    run_dir = str(tmp_path / "run")
    cfg = run_config(tmp_path, data, max_duration="3ba", eval_interval="2ba", eval_subset_num_batches=2,
                     loggers={"console": True, "console_interval": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert train.main([str(tmp_path / "run.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()

    progress = [x for x in lines if x.startswith("[batch ")]
    assert " 33% eta " in progress[0] and " 67% eta " in progress[1] and "100%]" in progress[2]  # no ETA once done
    final = [i for i, x in enumerate(lines) if x.startswith("[eval final @ batch 3] loss ")]
    assert len(final) == 1 and lines[final[0]].endswith(
        f" (the first 2 batches of the validation split: eval_subset_num_batches; `flexbert eval-mlm --model {run_dir} "
        f"--data {data}` scores all of it)")
    (done,) = [i for i, x in enumerate(lines) if x.startswith("[flexbert] done: 3 batches, ")]
    assert done > final[0] and lines[done].endswith(
        f"; checkpoint {os.path.join(run_dir, 'checkpoints', 'ba3.pt')}; next: `flexbert export --run-dir {run_dir} "
        f"--out hf/t` (a Hugging Face folder) or `flexbert eval-mlm --model {run_dir} --data {data}`")

    (doctor,) = [x[len("[doctor] "):] for x in lines if x.startswith("[doctor] ")]
    assert "attention_backend" not in doctor and "benchmarks-gpu" not in doctor  # no GPU advice on a CPU run
    assert diagnose.main([run_dir]) == 0
    assert capsys.readouterr().out.strip() == f"{run_dir}: {doctor}"  # the same shares, the same words
