"""Predicted masks land on the input's own grid and affine (MONAI Invertd), oblique and non-RAS inputs included."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers.seg_tasks import write_nifti

from medtl.config import load_config
from medtl.tasks.segmentation import SegmentationTask
from medtl.train.seg_inference import segment_scans
from medtl.transforms.record import InputRecord
from medtl.transforms.segmentation import build_inference_transforms
from medtl.weights.sources import Normalization


class Threshold(torch.nn.Module):
    """A stand-in network: class 1 wherever the windowed intensity is above 0.5, so the right answer is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] > 0.5).float()
        return torch.cat([1 - fg, fg], 1) * 10


def oblique_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A volume with two bright boxes, stored with permuted, flipped, 20-degree oblique, anisotropic axes."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 30, (23, 19, 11)).astype(np.float32)
    vol[5:12, 3:9, 2:6] = 800
    vol[15:20, 10:17, 7:10] = 800
    th = np.deg2rad(20)
    rot = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    perm = np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=float)  # voxel axes i, j, k -> world -y, z, -x
    affine = np.eye(4)
    affine[:3, :3] = rot @ perm @ np.diag([0.9, 1.3, 2.5])
    affine[:3, 3] = [12.5, -40.0, 7.25]
    write_nifti(path, vol, affine)
    return vol, affine


def _segment(tmp_path: Path, **preprocess) -> tuple[np.ndarray, nib.Nifti1Image, np.ndarray]:
    vol, affine = oblique_volume(tmp_path / "oblique.nii.gz")
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"ct_window": [0, 800], **preprocess},
            "segmentation": {"classes": ["background", "box"], "patch_size": [32, 32, 32]},
        }
    )
    transforms = build_inference_transforms(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    task = SegmentationTask(["background", "box"], roi_size=[32, 32, 32], spatial_dims=3)
    rows = segment_scans(Threshold(), task, transforms, [{"image": str(tmp_path / "oblique.nii.gz")}], tmp_path / "o")
    assert len(rows) == 1 and rows[0]["mask_file"].endswith("oblique_mask.nii.gz")
    return vol, nib.load(rows[0]["mask_file"]), affine


def test_mask_of_an_oblique_non_ras_scan_lands_on_its_grid_voxel_for_voxel(tmp_path: Path) -> None:
    # reoriented to RAS (axes permuted and flipped) and padded to the 32^3 window for the network, then undone
    vol, mask, affine = _segment(tmp_path, orientation="RAS")
    assert mask.shape == vol.shape
    assert np.abs(mask.affine - affine).max() < 1e-3  # voxel-to-world equal to 1e-3 mm
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (vol > 400).astype(np.uint8))


def test_mask_after_resampling_comes_back_on_the_input_grid(tmp_path: Path) -> None:
    vol, mask, affine = _segment(tmp_path, orientation="RAS", spacing=[1.5, 1.5, 1.5])
    assert mask.shape == vol.shape and np.abs(mask.affine - affine).max() < 1e-3
    truth = vol > 400
    got = np.asarray(mask.dataobj).astype(bool)
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice > 0.85, dice  # resampled to 1.5 mm and back with nearest neighbour: the boxes' edges move


@pytest.mark.slow  # trains a one-epoch run first (about a minute on 2 shared cores)
def test_predict_on_a_run_folder_writes_masks_on_the_input_grid(tmp_path: Path) -> None:
    from helpers.seg_tasks import seg_config

    from medtl.train import predict
    from medtl.train.run import fine_tune

    rows = []
    rng = np.random.default_rng(1)
    for i in range(6):
        m = np.zeros((24, 20, 12), dtype=np.uint8)
        m[4:12, 5:11, 3:8] = 1
        write_nifti(tmp_path / f"v{i}.nii.gz", (rng.normal(0, 50, m.shape) + 600.0 * m).astype(np.float32), np.eye(4))
        write_nifti(tmp_path / f"m{i}.nii.gz", m, np.eye(4))
        rows.append(f"v{i}.nii.gz,m{i}.nii.gz,x,P{i}")
    (tmp_path / "m.csv").write_text("image,mask,label,patient_id\n" + "\n".join(rows) + "\n")
    cfg = seg_config(
        tmp_path / "m.csv",
        tmp_path / "runs",
        data={"mode": "3d"},
        preprocess={"size": None, "ct_window": [-200, 800]},
        model={"arch": "resnet10_3d"},
        segmentation={"patch_size": [32, 32, 32], "samples_per_scan": 2, "decoder_channels": [16, 16, 8, 8, 8]},
        splits={"val_fraction": 0.34, "test_fraction": 0.0},
        train={"epochs": 1, "batch_size": 2},
    )
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    vol, affine = oblique_volume(tmp_path / "oblique.nii.gz")
    out = predict(result.run_dir, [tmp_path / "oblique.nii.gz"], out=tmp_path / "masks")
    mask = nib.load(out[0]["mask_file"])
    assert mask.shape == vol.shape and np.abs(mask.affine - affine).max() < 1e-3
    assert set(np.unique(np.asarray(mask.dataobj)).tolist()) <= {0, 1}
