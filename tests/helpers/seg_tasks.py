"""Small segmentation tasks written as real NIfTI files: images, label maps and a manifest with a mask column."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def sample_module(name: str) -> ModuleType:
    """``sample_data/<name>.py`` (a script folder, not a package), loaded by path once."""
    key = f"medtl_sample_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, SAMPLE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_disc_task(root: Path, n_patients: int = 24, size: int = 32, seed: int = 0) -> Path:
    """2D images (one-slice NIfTI volumes, HU-like) holding a bright disc of random place and radius; the mask
    is the disc (label 1). Half the patients are labelled ``big`` (radius >= 7) for stratification."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows: list[dict[str, Any]] = []
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    for i in range(n_patients):
        r = int(rng.integers(4, 10))
        cy, cx = rng.integers(r + 1, size - r - 1, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = rng.normal(0, 80, (size, size)) + 500.0 * disc.astype(np.float64)
        write_nifti(root / f"img_{i:03d}.nii.gz", img[..., None].astype(np.float32), affine)
        write_nifti(root / f"mask_{i:03d}.nii.gz", disc[..., None], affine)
        rows.append(
            {
                "image": f"img_{i:03d}.nii.gz",
                "mask": f"mask_{i:03d}.nii.gz",
                "label": "big" if r >= 7 else "small",
                "patient_id": f"P{i:03d}",
            }
        )
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def seg_config(manifest: Path, out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"manifest": str(manifest), "modality": "CT"},
        "splits": {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25},
        "preprocess": {"size": [32, 32], "ct_window": [-300, 800]},
        "model": {"arch": "resnet18", "weights": "scratch"},
        "segmentation": {"classes": ["background", "disc"], "decoder_channels": [32, 32, 16, 16, 16]},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "num_workers": 0, "loggers": ["csv"]},
        "augment": {"enabled": False},
        "output": {"dir": str(out)},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def make_sphere_task(
    root: Path, n_patients: int = 8, shape: tuple[int, int, int] = (24, 20, 12), seed: int = 0
) -> Path:
    """3D CT-like volumes (HU) holding a bright ball of random place (radius 4-6 voxels in-plane) on a 1 x 1 x 2.5 mm
    grid; the mask is the ball (label 1). A manifest without a label column."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    rows: list[dict[str, Any]] = []
    for i in range(n_patients):
        r = rng.uniform(4, 6)
        c = [rng.uniform(r + 1, n - r - 1) for n in shape[:2]] + [rng.uniform(3, shape[2] - 3)]
        ball = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + ((z - c[2]) * 2.5) ** 2 <= r * r).astype(np.uint8)
        img = rng.normal(-600, 60, shape) + 700.0 * ball
        write_nifti(root / f"vol_{i:03d}.nii.gz", img.astype(np.float32), affine)
        write_nifti(root / f"ball_{i:03d}.nii.gz", ball, affine)
        rows.append({"image": f"vol_{i:03d}.nii.gz", "mask": f"ball_{i:03d}.nii.gz", "patient_id": f"B{i:03d}"})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path
