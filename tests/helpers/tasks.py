"""Small learnable tasks written as real files (2D DICOM radiographs, 3D NIfTI volumes) with a manifest.

Shared by tests/train, tests/cli and tests/transforms."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from helpers.dicom import write_radiograph


def write_dx(path: Path, pixels: np.ndarray, patient_id: str) -> None:
    """One 2D DX radiograph (MONOCHROME2, uint16, 0.5 mm pixels)."""
    write_radiograph(path, pixels.astype(np.uint16), patient_id)


def _write_manifest(root: Path, rows: list[dict[str, Any]]) -> Path:
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def make_xray_task(root: Path, n_patients: int = 24, size: int = 32, seed: int = 0) -> Path:
    """Positive images have a bright disc at a random place; negatives do not. Noise everywhere."""
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_patients):
        label = "positive" if i % 2 else "negative"
        img = rng.normal(1000, 150, (size, size))
        if label == "positive":
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2] += 1500
        img[0, 0], img[-1, -1] = 0, 4000  # the same intensity range in every image
        name = f"img_{i:03d}.dcm"
        write_dx(root / name, np.clip(img, 0, 4095), f"PX{i:03d}")
        rows.append({"image": name, "label": label, "patient_id": f"PX{i:03d}"})
    return _write_manifest(root, rows)


def make_volume_task(root: Path, n_patients: int = 16, size: int = 16, seed: int = 0) -> Path:
    """CT-like NIfTI volumes in HU; positives hold a dense sphere."""
    rng = np.random.default_rng(seed)
    rows = []
    zz, yy, xx = np.mgrid[:size, :size, :size]
    for i in range(n_patients):
        label = "positive" if i % 2 else "negative"
        vol = rng.normal(0, 60, (size, size, size)).astype(np.float32)
        if label == "positive":
            c = rng.integers(size // 3, 2 * size // 3, 3)
            vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= (size // 4) ** 2] += 600
        name = f"vol_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])), str(root / name))
        rows.append({"image": name, "label": label, "patient_id": f"PV{i:03d}"})
    return _write_manifest(root, rows)


def base_config(manifest: Path, out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"manifest": str(manifest)},
        "splits": {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"arch": "resnet18", "weights": "scratch"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "num_workers": 0},
        "augment": {"enabled": False},
        "output": {"dir": str(out)},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg
