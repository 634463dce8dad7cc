"""The pretraining run folder is a RunDir: locked while written, statuses as in training, interrupt and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medtl.errors import TrainingError
from medtl.pretraining import pretrain
from medtl.pretraining.module import PretrainModule
from medtl.pretraining.run import PretrainInterrupted
from medtl.rundir import RunDir, RunLockedError


def _config(pool: dict[str, Path], tmp_path: Path, epochs: int = 2) -> dict[str, Any]:
    return {
        "data": {"manifest": str(pool["xray"])},
        "preprocess": {"size": [32, 32]},
        "model": {"arch": "resnet18"},
        "train": {
            "epochs": epochs,
            "batch_size": 8,
            "lr": 0.001,
            "warmup_epochs": 0,
            "cache": "memory",
            "limit_train_batches": 1,
        },
        "output": {"dir": str(tmp_path / "runs"), "name": "pool"},
    }


def _epochs(run: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def test_a_second_pretraining_into_a_folder_in_use_is_refused(pool, tmp_path: Path, home: Path) -> None:
    run = tmp_path / "runs" / "pool"
    run.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{other.pid} {__import__('socket').gethostname()}\n")
        with pytest.raises(RunLockedError, match=f"run folder {run} is in use by process {other.pid}"):
            pretrain(_config(pool, tmp_path), quiet=True)
    finally:
        other.kill()
        other.wait()
    assert not (run / "result.json").exists()  # the refused process wrote nothing into the other's folder
    assert (run / ".lock").is_file()


def test_an_interrupted_pretraining_says_so_and_resumes_to_the_end(
    pool, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = PretrainModule.training_step

    def ctrl_c_in_epoch_2(self: PretrainModule, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", ctrl_c_in_epoch_2)
    run = tmp_path / "runs" / "pool"
    with pytest.raises(PretrainInterrupted) as caught:
        pretrain(_config(pool, tmp_path), quiet=True)
    assert str(caught.value) == (
        f"pretraining run {run} stopped during epoch 2; continue it with: medtl pretrain --resume {run}"
    )
    result = RunDir(run).read_result()
    assert result["status"] == "interrupted" and result["resume"] == f"medtl pretrain --resume {run}"
    assert (run / "last.ckpt").is_file() and not (run / "encoder.safetensors").exists()
    assert _epochs(run) == [1]
    first_row = (run / "metrics.csv").read_text().splitlines()[1]
    assert not (run / ".lock").exists() and not [p for p in run.iterdir() if ".tmp-" in p.name]

    monkeypatch.setattr(PretrainModule, "training_step", real_step)
    # the saved config wins: another one is refused with the fields that differ
    with pytest.raises(TrainingError, match=r"1 field\(s\) differ: train.lr: run 0.001, asked 0.01"):
        pretrain(
            _config(pool, tmp_path) | {"train": {**_config(pool, tmp_path)["train"], "lr": 0.01}},
            run_dir=run,
            resume=True,
        )
    result = pretrain(None, run_dir=run, resume=True, quiet=True)
    assert result.weights == "local:pool"
    assert _epochs(run) == [1, 2]
    assert (run / "metrics.csv").read_text().splitlines()[1] == first_row  # epoch 1 came from the checkpoint
    done = RunDir(run).read_result()
    assert done["status"] == "ok" and done["epochs_run"] == 2 and done["resumed_with"] is None
    assert json.loads((run / "source.json").read_text())["epochs"] == 2
    assert not (run / "last.ckpt").exists()  # only resume needed it; the encoder is in encoder.safetensors
    with pytest.raises(TrainingError, match="has finished already"):
        pretrain(None, run_dir=run, resume=True, quiet=True)
    with pytest.raises(TrainingError, match="already holds a pretraining run"):
        pretrain(_config(pool, tmp_path), quiet=True)


def test_resume_needs_a_checkpoint(tmp_path: Path, home: Path) -> None:
    with pytest.raises(TrainingError, match="holds no pretraining run with a last.ckpt"):
        pretrain(None, run_dir=tmp_path / "nothing", resume=True)


@pytest.mark.slow
def test_sigterm_on_python_m_medtl_pretraining_then_resume(pool, tmp_path: Path) -> None:
    """The module's command line, as a cluster job runs it: SIGTERM, exit 130 with one line, then --resume (~60 s)."""
    import os
    import signal
    import time

    import yaml

    cfg = _config(pool, tmp_path, epochs=4)
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, MEDTL_HOME=str(tmp_path / "medtl-home"), HF_HUB_OFFLINE="1")
    run = tmp_path / "runs" / "pool"
    command = [sys.executable, "-m", "medtl.pretraining"]
    proc = subprocess.Popen([*command, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "metrics.csv").is_file() and _epochs(run):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] == (
        f"interrupted: pretraining run {run} stopped during epoch 2; continue it with: medtl pretrain --resume {run}"
    ), err
    assert "Traceback" not in err
    assert RunDir(run).status == "interrupted"
    done = subprocess.run([*command, "--resume", str(run)], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert RunDir(run).read_result()["status"] == "ok"
    assert _epochs(run) == [1, 2, 3, 4]
