"""Hostile pretraining pools: one-slice volumes in a 3D pool, and a pool that grew between a run and its resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from medtl.errors import ManifestError, TrainingError
from medtl.pretraining import pretrain
from medtl.pretraining.module import PretrainModule
from medtl.pretraining.run import PretrainInterrupted
from medtl.rundir import RunDir


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "medtl-home"
    monkeypatch.setenv("MEDTL_HOME", str(path))
    return path


def _volume(path: Path, depth: int, seed: int) -> str:
    """A small CT volume in HU (a bright ball in soft tissue), ``depth`` slices."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(20), np.arange(20), np.arange(depth), indexing="ij")
    ball = (x - 10) ** 2 + (y - 10) ** 2 + (z - depth / 2) ** 2 < 25
    hu = np.where(ball, 300, 40) + rng.normal(0, 20, ball.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path.name


def _pool(folder: Path, depths: list[int]) -> Path:
    names = [_volume(folder / f"ct{i:02d}.nii.gz", d, i) for i, d in enumerate(depths)]
    manifest = folder / "manifest.csv"
    manifest.write_text("image\n" + "".join(f"{n}\n" for n in names))
    return manifest


def _config(manifest: Path, tmp_path: Path, **train: Any) -> dict[str, Any]:
    return {
        "data": {"manifest": str(manifest), "modality": "CT"},
        "preprocess": {"size": [16, 16, 16], "ct_window": [-1000, 400]},
        "model": {"arch": "resnet10_3d"},
        "method": "genesis",
        "genesis": {"decoder_width": 8},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 0, "cache": "memory", **train},
        "output": {"dir": str(tmp_path / "runs"), "name": "ct", "register_weights": False},
    }


def test_a_3d_pool_refuses_one_slice_volumes(tmp_path: Path, home: Path) -> None:
    manifest = _pool(tmp_path / "pool", [12, 12, 1, 12, 1])
    with pytest.raises(ManifestError) as caught:
        pretrain(_config(manifest, tmp_path), quiet=True)
    text = str(caught.value)
    assert "\n" not in text
    assert "2 of 5 scans are not volumes of several slices" in text
    assert f"row 4: {tmp_path / 'pool' / 'ct02.nii.gz'} has one slice (shape 20x20x1)" in text
    assert "row 6:" in text and "ct04.nii.gz" in text and "ct00" not in text
    assert "data.mode 2d" in text
    result = RunDir(tmp_path / "runs" / "ct").read_result()
    assert result["status"] == "failed" and not (tmp_path / "runs" / "ct" / "encoder.safetensors").exists()


def test_resume_refuses_a_pool_that_changed(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _pool(tmp_path / "pool", [12] * 6)
    original = manifest.read_text()
    real_step = PretrainModule.training_step

    def ctrl_c_in_epoch_2(self: PretrainModule, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", ctrl_c_in_epoch_2)
    run = tmp_path / "runs" / "ct"
    with pytest.raises(PretrainInterrupted):
        pretrain(_config(manifest, tmp_path, limit_train_batches=1), quiet=True)
    monkeypatch.setattr(PretrainModule, "training_step", real_step)

    # three more scans in the pool: resuming would train on 9 and record "9 scans x 2 epochs"
    extra = [_volume(tmp_path / "pool" / f"new{i}.nii.gz", 12, 50 + i) for i in range(3)]
    manifest.write_text(original + "".join(f"{n}\n" for n in extra))
    with pytest.raises(TrainingError) as caught:
        pretrain(None, run_dir=run, resume=True, quiet=True)
    text = str(caught.value)
    assert "\n" not in text
    assert "it started on 6 scans" in text and "now holds 9" in text
    assert "start a new pretraining run" in text and "restore the pool" in text
    assert (run / "last.ckpt").is_file() and not (run / "encoder.safetensors").exists()
    recorded = json.loads((run / "pool.json").read_text())  # the pool of the first start, kept
    assert recorded["n_scans"] == 6 and recorded["manifest_sha256"] != hashlib.sha256(manifest.read_bytes()).hexdigest()

    # the same count with another scan in place of one is another pool too
    manifest.write_text(original.replace("ct05.nii.gz", extra[0]))
    with pytest.raises(TrainingError, match=r"started on 6 scans .* now holds 6 \(the same count, but other rows\)"):
        pretrain(None, run_dir=run, resume=True, quiet=True)

    manifest.write_text(original)  # the pool restored: the run resumes and finishes on it
    result = pretrain(None, run_dir=run, resume=True, quiet=True)
    assert result.record["data"]["n_scans"] == 6 and result.record["epochs"] == 2
