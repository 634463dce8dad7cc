"""``evaluate`` on a segmentation run: Dice, HD95 and surface Dice per scan, per patient and overall; the run's
own patients refused or scored apart; ``predict --dicom-seg`` and ``evaluate`` through the command line."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers.cli import assert_one_line_error, medtl
from helpers.seg_tasks import seg_config, write_nifti

from medtl.config import load_config
from medtl.errors import TrainingError
from medtl.rundir import RunDir
from medtl.tasks.segmentation import SegmentationTask
from medtl.train.predict import LoadedRun
from medtl.train.scoring import evaluate_segmentation
from medtl.transforms.record import InputRecord
from medtl.transforms.segmentation import build_segmentation_pipeline
from medtl.utils import hash_patient_id
from medtl.weights.sources import Normalization

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SHAPE = (24, 20, 12)
PRE_3D = {"modality": "CT", "mode": "3d", "scan_dims": 3, "in_channels": 1}  # the run's preprocessing.json


class Threshold(torch.nn.Module):
    """A stand-in network: class 1 wherever the windowed intensity is above 0.5, so every score is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] > 0.5).float()
        return torch.cat([1 - fg, fg], 1) * 10


def _box() -> np.ndarray:
    m = np.zeros(SHAPE, dtype=np.uint8)
    m[4:12, 5:11, 3:9] = 1
    return m


def _scans(root: Path) -> Path:
    """Four scans of three patients: P1's two (mask = the box; mask = half the box), P2's (no box, empty mask) and
    P3's (the box; a patient the run trained on). Returns a manifest without a label column."""
    rng = np.random.default_rng(0)
    half = _box()
    half[8:12] = 0
    cases = [
        ("a", "P1", _box(), _box()),
        ("b", "P1", _box(), half),
        ("c", "P2", None, None),
        ("d", "P3", _box(), _box()),
    ]
    rows = []
    for name, patient, box, mask in cases:
        box = np.zeros(SHAPE, np.uint8) if box is None else box
        mask = np.zeros(SHAPE, np.uint8) if mask is None else mask
        write_nifti(root / f"{name}.nii.gz", (rng.normal(0, 30, SHAPE) + 600.0 * box).astype(np.float32), np.eye(4))
        write_nifti(root / f"{name}_ref.nii.gz", mask, np.eye(4))
        rows.append(f"{name}.nii.gz,{name}_ref.nii.gz,{patient}")
    (root / "eval.csv").write_text("image,mask,patient_id\n" + "\n".join(rows) + "\n")
    return root / "eval.csv"


def _loaded_run(root: Path) -> LoadedRun:
    """A run folder holding only splits.csv (P3 in train), with the threshold network as its model."""
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT", "mode": "3d"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"ct_window": [-200, 800]},
            "segmentation": {"classes": ["background", "box"], "patch_size": [32, 32, 32]},
        }
    )
    pipeline = build_segmentation_pipeline(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    run = root / "run"
    run.mkdir()
    (run / "splits.csv").write_text(f"patient_id,split\n{hash_patient_id('P3')},train\n")
    task = SegmentationTask(["background", "box"], roi_size=[32, 32, 32], spatial_dims=3)
    return LoadedRun(RunDir(run), cfg, task, pipeline, Threshold().eval(), PRE_3D, run / "best.ckpt")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_evaluate_scores_scans_patients_and_overall_and_keeps_seen_patients_apart(tmp_path: Path) -> None:
    manifest = _scans(tmp_path)
    loaded = _loaded_run(tmp_path)
    with pytest.raises(TrainingError, match=r"1 row\(s\) of patients the run train.*--allow-seen"):
        evaluate_segmentation(loaded, manifest, device="cpu")
    m = evaluate_segmentation(loaded, manifest, out=tmp_path / "scores.csv", allow_seen=True, device="cpu")
    # per scan: box predicted exactly; half the box as reference: Dice 2|M|/(|M| + |B|) = 2/3; both empty: 1
    by_image = {Path(r["image"]).name: r for r in m["scans"]}
    assert by_image["a.nii.gz"]["dice"] == pytest.approx(1.0)
    assert by_image["b.nii.gz"]["dice"] == pytest.approx(2 / 3)
    assert by_image["c.nii.gz"]["dice"] == 1.0 and by_image["c.nii.gz"]["hd95_box"] == 0.0
    assert by_image["a.nii.gz"]["hd95_box"] == 0.0 and by_image["b.nii.gz"]["hd95_box"] > 1.0
    assert [r["split"] for r in m["scans"]] == ["new", "new", "new", "train"]
    # overall: the three unseen scans; per patient: P1 (1 + 2/3) / 2, P2 1
    assert m["n"] == 3 and m["dice"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert m["n_patients"] == 2
    p1, p2 = (next(p for p in m["patients"] if p["patient_id"] == hash_patient_id(x)) for x in ("P1", "P2"))
    assert p1["n_scans"] == 2 and p1["dice"] == pytest.approx(5 / 6) and p2["dice"] == pytest.approx(1.0)
    assert m["patient_mean"]["dice"] == pytest.approx((5 / 6 + 1) / 2)
    assert m["seen"]["train"]["n"] == 1 and m["seen"]["train"]["dice"] == pytest.approx(1.0)
    # the CSVs: the columns of a run's predictions_<split>.csv and the split; one row per patient
    columns, rows = _read_csv(tmp_path / "scores.csv")
    assert columns == loaded.task.prediction_columns(with_labels=True) + ["split"]
    assert len(rows) == 4 and float(rows[1]["dice"]) == pytest.approx(2 / 3, abs=1e-6)
    columns, rows = _read_csv(tmp_path / "scores_patients.csv")
    assert columns[:3] == ["patient_id", "n_scans", "dice"] and len(rows) == 2


@pytest.mark.slow  # trains a one-epoch run first (about a minute on 2 shared cores)
def test_cli_evaluate_and_predict_dicom_seg_on_a_trained_run(tmp_path: Path) -> None:
    from medtl.io import read_scan
    from medtl.io.dicom_seg import read_dicom_seg
    from medtl.train.run import fine_tune

    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        m = _box()
        write_nifti(tmp_path / f"v{i}.nii.gz", (rng.normal(0, 50, SHAPE) + 600.0 * m).astype(np.float32), np.eye(4))
        write_nifti(tmp_path / f"m{i}.nii.gz", m, np.eye(4))
        rows.append(f"v{i}.nii.gz,m{i}.nii.gz,x,P{i}")
    (tmp_path / "m.csv").write_text("image,mask,label,patient_id\n" + "\n".join(rows) + "\n")
    cfg = seg_config(
        tmp_path / "m.csv",
        tmp_path / "runs",
        data={"mode": "3d"},
        preprocess={"size": None, "ct_window": [-1000, 400]},
        model={"arch": "resnet10_3d"},
        segmentation={"patch_size": [32, 32, 32], "samples_per_scan": 2, "decoder_channels": [16, 16, 8, 8, 8]},
        splits={"val_fraction": 0.34, "test_fraction": 0.17},
        train={"epochs": 1, "batch_size": 2},
    )
    run = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True).run_dir
    env = dict(os.environ)
    # evaluate: the run's own patients refused, then scored apart; the CSV has predictions_test.csv's columns
    proc = medtl(env, "evaluate", run, tmp_path / "m.csv", limit=120)
    assert_one_line_error(proc, "--allow-seen")
    proc = medtl(env, "evaluate", run, tmp_path / "m.csv", "--allow-seen", "--out", tmp_path / "e.csv", limit=120)
    assert proc.returncode == 0, proc.stderr
    assert "scans: n 1" in proc.stdout and "patients (1," in proc.stdout, proc.stdout
    test_columns, _ = _read_csv(Path(run) / "predictions_test.csv")
    columns, scored = _read_csv(tmp_path / "e.csv")
    assert columns == test_columns + ["split"] and len(scored) == 6
    # predict --dicom-seg on a DICOM CT series: the NIfTI mask and the SEG hold the same voxels
    series = SAMPLE / "ct" / "1D4EE61B"
    proc = medtl(env, "predict", run, series, "--out", tmp_path / "masks", "--dicom-seg", limit=120)
    assert proc.returncode == 0, proc.stderr
    nifti = np.asarray(nib.load(tmp_path / "masks" / "1D4EE61B_mask.nii.gz").dataobj)
    back = read_dicom_seg(tmp_path / "masks" / "1D4EE61B_seg.dcm", read_scan(series), classes=["background", "disc"])
    np.testing.assert_array_equal(np.asarray(back[0]), nifti)
    # a NIfTI input cannot give a DICOM SEG
    proc = medtl(env, "predict", run, tmp_path / "v0.nii.gz", "--out", tmp_path / "m2", "--dicom-seg", limit=120)
    assert_one_line_error(proc, "--dicom-seg", "v0.nii.gz")
    assert "--dicom-seg" in medtl(env, "predict", "--help").stdout


def test_evaluate_takes_dicom_seg_reference_masks(tmp_path: Path) -> None:
    import importlib.util
    import sys

    pytest.importorskip("highdicom")
    spec = importlib.util.spec_from_file_location("medtl_sample_dicom_seg", SAMPLE / "dicom_seg.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    (row,) = module.write_ct_seg(tmp_path / "ct_seg", ct_dir=SAMPLE / "ct")
    manifest = tmp_path / "seg.csv"
    manifest.write_text(f"image,mask,patient_id\n{SAMPLE / 'ct' / row['image'][6:]},ct_seg/{row['mask']},S1\n")

    class Background(torch.nn.Module):  # predicts nothing: every reference class is missed
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.ones_like(x[:, :1]), torch.zeros_like(x[:, :1]), torch.zeros_like(x[:, :1])], 1)

    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT", "mode": "3d"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"orientation": "RAS", "ct_window": [-1000, 400]},
            "segmentation": {"classes": ["background", "lung", "nodule"], "patch_size": [32, 32, 32]},
        }
    )
    pipeline = build_segmentation_pipeline(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    task = SegmentationTask(["background", "lung", "nodule"], roi_size=[32, 32, 32], spatial_dims=3)
    (tmp_path / "run").mkdir()
    loaded = LoadedRun(RunDir(tmp_path / "run"), cfg, task, pipeline, Background(), PRE_3D, tmp_path / "x.ckpt")
    for grid in ("native", "preprocessed"):
        m = evaluate_segmentation(loaded, manifest, device="cpu", grid=grid)
        # both classes are in the SEG (read onto the series' grid) and missed: Dice 0, HD95 undefined
        assert m["n"] == 1 and m["dice_lung"] == 0.0 and m["dice_nodule"] == 0.0 and m["hd95_undefined"] == 2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def test_native_grid_scores_the_masks_predict_writes(tmp_path: Path) -> None:
    """A thin-sliced scan resampled to 1.5 mm for the model: evaluate on the scan's own grid gives the Dice of the
    mask ``predict`` writes against the reference, computed here with numpy; on the preprocessed grid it differs."""
    from medtl.train.seg_inference import segment_scans
    from medtl.transforms.segmentation import build_inference_transforms

    shape, affine = (40, 36, 10), np.diag([0.5, 0.5, 3.0, 1.0])
    ref = np.zeros(shape, np.uint8)
    ref[9:23, 7:20, 3:7] = 1  # edges that do not fall on the 1.5 mm grid
    rng = np.random.default_rng(3)
    write_nifti(tmp_path / "a.nii.gz", (rng.normal(0, 20, shape) + 600.0 * ref).astype(np.float32), affine)
    write_nifti(tmp_path / "a_ref.nii.gz", ref, affine)
    (tmp_path / "m.csv").write_text("image,mask,patient_id\na.nii.gz,a_ref.nii.gz,P1\n")
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT", "mode": "3d"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"ct_window": [-200, 800], "spacing": [1.5, 1.5, 1.5]},
            "segmentation": {"classes": ["background", "box"], "patch_size": [32, 32, 32]},
        }
    )
    pipeline = build_segmentation_pipeline(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    task = SegmentationTask(["background", "box"], roi_size=[32, 32, 32], spatial_dims=3)
    (tmp_path / "run").mkdir()
    loaded = LoadedRun(RunDir(tmp_path / "run"), cfg, task, pipeline, Threshold().eval(), PRE_3D, tmp_path / "x")
    native = evaluate_segmentation(loaded, tmp_path / "m.csv", device="cpu")
    resampled = evaluate_segmentation(loaded, tmp_path / "m.csv", device="cpu", grid="preprocessed")
    assert native["grid"] == "native" and resampled["grid"] == "preprocessed"

    transforms = build_inference_transforms(cfg, InputRecord.of(**PRE_3D, normalization=Normalization("none")))
    (row,) = segment_scans(Threshold(), task, transforms, [{"image": str(tmp_path / "a.nii.gz")}], tmp_path / "out")
    written = np.asarray(nib.load(row["mask_file"]).dataobj)
    assert written.shape == shape
    expected = _dice(written == 1, ref == 1)
    assert 0.5 < expected < 1.0  # the resampling round trip moved the edges
    assert native["dice"] == pytest.approx(expected, abs=1e-6)  # MONAI's Dice is float32
    assert abs(resampled["dice"] - native["dice"]) > 1e-3
    # distances in the scan's own voxel size: HD95 is a multiple-ish of 0.5 mm in-plane, 3 mm through-plane
    assert 0.0 < native["hd95"] <= 6.0


def test_native_grid_on_2d_images_resized_for_the_model(tmp_path: Path) -> None:
    """2D images resized to 64 px for the model are scored at their own 32 px, 0.8 mm pixels."""
    from helpers.seg_tasks import make_disc_task

    from medtl.train.seg_inference import segment_scans
    from medtl.transforms.segmentation import build_inference_transforms

    manifest = make_disc_task(tmp_path, n_patients=3)
    cfg = load_config(
        {
            "data": {"manifest": str(manifest), "modality": "CT", "mode": "2d"},
            "model": {"arch": "resnet18"},
            "preprocess": {"size": [64, 64], "ct_window": [-200, 800]},
            "segmentation": {"classes": ["background", "disc"]},
        }
    )
    pre = {"modality": "CT", "mode": "2d", "scan_dims": 2, "in_channels": 1}
    pipeline = build_segmentation_pipeline(cfg, InputRecord.of(**pre, normalization=Normalization("none")))
    task = SegmentationTask(["background", "disc"], roi_size=[64, 64], spatial_dims=2)
    (tmp_path / "run").mkdir()
    loaded = LoadedRun(RunDir(tmp_path / "run"), cfg, task, pipeline, Threshold().eval(), pre, tmp_path / "x")
    m = evaluate_segmentation(loaded, manifest, device="cpu")
    transforms = build_inference_transforms(cfg, InputRecord.of(**pre, normalization=Normalization("none")))
    for scan in m["scans"]:
        (row,) = segment_scans(Threshold(), task, transforms, [{"image": scan["image"]}], tmp_path / "o")
        written = np.asarray(nib.load(row["mask_file"]).dataobj)[..., 0]
        ref = np.asarray(nib.load(scan["mask"]).dataobj)[..., 0]
        assert written.shape == ref.shape == (32, 32)
        assert scan["dice"] == pytest.approx(_dice(written == 1, ref == 1), abs=1e-6)
        Path(row["mask_file"]).unlink()
    assert m["n"] == 3 and 0.7 < m["dice"] <= 1.0


def test_a_model_giving_nan_is_an_error_not_a_background_mask(tmp_path: Path) -> None:
    manifest = _scans(tmp_path)
    loaded = _loaded_run(tmp_path)

    class Nan(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 2, *x.shape[2:]), float("nan"))

    loaded.model = Nan()
    for grid in ("native", "preprocessed"):
        with pytest.raises(TrainingError, match="non-finite outputs"):
            evaluate_segmentation(loaded, manifest, allow_seen=True, device="cpu", grid=grid)
