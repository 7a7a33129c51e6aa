"""Long work shows progress on stderr (stdout keeps the results): `flexbert eval-mlm` counts the
split's tokens with an ETA, `flexbert split-by-length` the documents of each split; `--no-progress`
turns it off."""

from tqdm import tqdm


def test_eval_mlm_and_split_by_length_show_progress_on_stderr(trained, data, tmp_path, capsys):
    from flexbert.cli import eval_mlm, split_by_length
    from flexbert.data.stream_config import StreamConfig, stream_tokens

    cfg, _ = trained
    assert eval_mlm.main(["--model", cfg["run_dir"], "--data", data]) == 0
    out, err = capsys.readouterr()
    total = stream_tokens(StreamConfig(local=data), "validation")
    assert "MLM loss" in out and "eval-mlm" not in out
    # over the split's tokens (stats.json): an ETA.  The packed eval rows end a little short of that
    # count (7.86k of 8.04k on this fixture), so the bar's last line need not read 100%.
    assert f"/{tqdm.format_sizeof(total)} [" in err and "eval-mlm:" in err
    assert eval_mlm.main(["--model", cfg["run_dir"], "--data", data, "--max-batches", "1", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""

    assert split_by_length.main([data, "--bounds", "48", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "split-by-length train" in err and "split-by-length validation" in err
