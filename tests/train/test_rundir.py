"""RunDir: the run folder's files, its lock, and one-line errors for corrupt or missing files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medtl.config import load_config
from medtl.errors import ConfigError, RunDirError
from medtl.rundir import RunDir, RunLockedError


def test_a_second_writer_is_refused_while_the_first_lives_and_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with run.lock():
        assert (run.path / ".lock").read_text().startswith(f"{os.getpid()} ")
        # another live process holds it: a child process pretending to be the writer
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (run.path / ".lock").write_text(f"{child.pid} {os.uname().nodename}\n")
            with pytest.raises(RunLockedError, match=f"in use by process {child.pid}"):
                with RunDir(run.path).lock():
                    pass
        finally:
            child.kill()
            child.wait()
        # that process is gone: its lock is stale and taken over
        with RunDir(run.path).lock():
            assert (run.path / ".lock").read_text().startswith(f"{os.getpid()} ")
    assert not (run.path / ".lock").exists()


def test_files_round_trip_and_corrupt_ones_give_one_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.status == "pending" and run.read_result() == {} and run.read_metrics() == []
    run.write_result({"status": "ok", "metrics": {"val": {"auroc": float("nan"), "n": np.int64(3)}}})
    assert run.read_result()["metrics"]["val"] == {"auroc": None, "n": 3}  # strict JSON: NaN becomes null
    assert run.status == "ok"
    run.write_metrics([{"epoch": 1, "time_s": 1.5, "val_auroc": float("nan")}], ["epoch", "time_s", "val_auroc"])
    (row,) = run.read_metrics()
    assert row["epoch"] == 1 and row["time_s"] == 1.5 and np.isnan(row["val_auroc"])
    cols = ["image", "patient_id", "label", "prob_a", "prob_b", "pred"]
    run.write_predictions(
        "test", cols, [{"image": "x.dcm", "patient_id": "p", "label": "b", "prob_a": 0.25, "prob_b": 0.75, "pred": "b"}]
    )
    pids, labels, probs = run.read_predictions("test", ["a", "b"])
    assert pids == ["p"] and labels == [1] and probs.tolist() == [[0.25, 0.75]]
    assert not list(run.path.glob(".*.tmp-*"))  # no temporary file left behind

    (run.path / "preprocessing.json").write_text("{not json")
    with pytest.raises(RunDirError, match="preprocessing.json is not valid JSON"):
        run.read_preprocessing()
    (run.path / "preprocessing.json").write_text('{"modality": "CT"}')
    with pytest.raises(RunDirError, match="lacks mode"):
        run.read_preprocessing()
    with pytest.raises(RunDirError, match="is not a finished medtl run"):
        run.checkpoint_for_inference()
    (run.path / "config.yaml").write_text("x: 1\n")
    (run.path / "last.ckpt").write_bytes(b"")
    ckpt, note = run.checkpoint_for_inference()
    assert ckpt.name == "last.ckpt" and "best.ckpt is missing; using last.ckpt" in note


@pytest.mark.parametrize("name", ["../outside", "/abs/path", "..", "a/b"])
def test_output_name_cannot_leave_output_dir(name: str) -> None:
    with pytest.raises(ConfigError, match="plain folder name inside output.dir"):
        load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}, "output": {"name": name}})


def test_a_run_made_under_another_pseudonym_secret_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medtl.train.experiment import check_pseudonyms, pseudonym_check

    monkeypatch.setenv("MEDTL_ID_SECRET", "site-a-secret-0123456789")
    made_at_site_a = pseudonym_check()
    check_pseudonyms(tmp_path, made_at_site_a)  # the same secret: fine
    check_pseudonyms(tmp_path, None)  # runs from before the check: nothing to compare
    monkeypatch.setenv("MEDTL_ID_SECRET", "site-b-secret-0123456789")
    with pytest.raises(RunDirError, match="another patient-pseudonym secret"):
        check_pseudonyms(tmp_path, made_at_site_a)
