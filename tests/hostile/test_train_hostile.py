"""Hostile inputs to the training side, through the real ``medtl`` command: configs, run folders, checkpoints.

Each case checks the exit code, one line on stderr naming the file or field, no traceback, nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers.cli import assert_one_line_error, medtl, no_leftovers
from helpers.tasks import base_config, make_xray_task

from medtl.cli import main
from medtl.config import TrainConfig
from medtl.errors import TrainingError
from medtl.models import create_model
from medtl.tasks.classification import ClassificationTask
from medtl.train import fine_tune
from medtl.train.module import TaskModule

SLOW_START = 120.0  # commands that import torch and Lightning


class _Proc:
    """What a user sees of ``medtl ARGS`` run in this process (no interpreter start-up: torch is imported)."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run_medtl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    monkeypatch.delenv("MEDTL_RUN_DIR", raising=False)

    def run(*args: str | Path) -> _Proc:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return _Proc(code, captured.out, captured.err)

    return run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, MEDTL_HOME=str(tmp_path / "medtl-home"), HF_HUB_OFFLINE="1", MEDTL_DEBUG="0")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 1-epoch 2D run on 16 px radiographs (its config names its manifest), copied by tests that damage it."""
    xray_task = make_xray_task(tmp_path_factory.mktemp("xray"), size=16)
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(xray_task, out, preprocess={"size": [16, 16]}, train={"epochs": 1}, output={"name": "r"})
    fine_tune(cfg, quiet=True)
    return out / "r", cfg


def _a_scan(run: Path) -> Path:
    """One radiograph of the run's own task."""
    manifest = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["manifest"])
    return next(manifest.parent.rglob("*.dcm"))


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_a_binary_config_and_invalid_yaml_in_set(tmp_path: Path, env) -> None:
    """Through the installed command: a new process, as a user starts it."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(medtl(env, "train", cfg, limit=SLOW_START), "cfg.yaml")
    cfg.write_text("data: {manifest: m.csv}\nmodel: {arch: resnet18}\n")
    line = assert_one_line_error(medtl(env, "train", cfg, "--set", "train.epochs=[1,", limit=SLOW_START))
    assert "--set" in line and "train.epochs" in line


def test_corrupt_run_folder_files_are_one_line_errors(finished_run, tmp_path: Path, run_medtl) -> None:
    run, _ = finished_run
    scan = _a_scan(run)
    damaged = _copy(run, tmp_path)
    (damaged / "preprocessing.json").write_text('{"modality": "XR", ')
    assert_one_line_error(run_medtl("predict", damaged, scan), "preprocessing.json")
    damaged = _copy(run, tmp_path / "b")
    for name in ("best.ckpt", "last.ckpt"):
        data = (damaged / name).read_bytes()
        (damaged / name).write_bytes(data[: len(data) // 3])
    assert_one_line_error(run_medtl("predict", damaged, scan), "best.ckpt")


def test_a_checkpoint_of_nans_in_a_run_folder_is_refused(finished_run, tmp_path: Path, run_medtl) -> None:
    run, _ = finished_run
    damaged = _copy(run, tmp_path)
    state = torch.load(damaged / "best.ckpt", map_location="cpu", weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key].fill_(float("nan"))
    torch.save(state, damaged / "best.ckpt")
    scan = _a_scan(run)
    line = assert_one_line_error(run_medtl("predict", damaged, scan), "best.ckpt")
    assert "non-finite" in line


def test_predict_refuses_another_kind_of_input_and_an_output_folder(finished_run, tmp_path: Path, run_medtl) -> None:
    run, _ = finished_run
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(volume))
    line = assert_one_line_error(run_medtl("predict", run, volume), "ct.nii.gz")
    assert "takes 2D input" in line
    scan = _a_scan(run)
    folder = tmp_path / "preds"
    folder.mkdir()
    line = assert_one_line_error(run_medtl("predict", run, scan, "--out", folder), "preds")
    assert "folder" in line and list(folder.iterdir()) == [] and no_leftovers(tmp_path) == []


def test_a_failed_run_does_not_trap_its_name(finished_run, tmp_path: Path, run_medtl) -> None:
    _, cfg = finished_run
    cfg = dict(cfg, output={"dir": str(tmp_path), "name": "again"})
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "result.json").write_text(json.dumps({"status": "failed", "error": "disk full"}))
    # failed after an epoch (a checkpoint to resume from); one that failed before has nothing to keep and is replaced
    (tmp_path / "again" / "last.ckpt").write_bytes(b"checkpoint")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    line = assert_one_line_error(run_medtl("train", path), "again")
    assert "--overwrite" in line and "status failed" in line
    proc = run_medtl("train", path, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "again" / "result.json").read_text())["status"] == "ok"


def test_a_non_finite_loss_stops_training_or_is_skipped_as_configured() -> None:
    model = create_model("resnet18", weights="scratch", in_channels=1, num_classes=2, spatial_dims=2)
    batch = {"image": torch.full((2, 1, 16, 16), float("nan")), "label": torch.tensor([0, 1])}
    module = TaskModule(model, ClassificationTask(["a", "b"]), TrainConfig(max_nonfinite_steps=1), "one_cycle")
    module.log = lambda *a, **k: None  # no trainer attached
    assert module.training_step(batch, 0) is None  # skipped: one allowed
    with pytest.raises(TrainingError, match="training loss is nan at epoch 1, batch 1"):
        module.training_step(batch, 1)


@pytest.mark.slow  # a new training process; KeyboardInterrupt and a mid-epoch kill are tested in-process by default
def test_sigterm_stops_a_run_with_its_resume_command(tmp_path: Path, env) -> None:
    """A cluster's time limit sends SIGTERM: the run stops like Ctrl-C (exit 130) and records how to resume."""
    import signal
    import subprocess
    import time

    from helpers.cli import MEDTL

    task = make_xray_task(tmp_path / "xray", size=16)
    cfg = base_config(task, tmp_path / "runs", preprocess={"size": [16, 16]}, train={"epochs": 200, "loggers": ["csv"]})
    cfg["output"]["name"] = "long"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [MEDTL, "train", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    metrics = tmp_path / "runs" / "long" / "metrics.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.5)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a training process behind
    run = tmp_path / "runs" / "long"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted: run {run} stopped during epoch "), err
    assert lines[0].endswith(f"continue it with: medtl train --resume {run}"), err
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["resume"] == f"medtl train --resume {run}"
