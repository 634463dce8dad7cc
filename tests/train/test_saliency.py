"""Saliency maps and calibration end to end on the sample data: ``medtl predict RUN scans --saliency`` writes a heat
map per scan on the scan's own grid (NIfTI: the input's shape and affine) and an overlay PNG; a classification run
draws maps of its first test patients and a reliability diagram into its folder, and with ``train.calibrate:
temperature`` records the temperature that predict then applies; what is refused is refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers.tasks import base_config

from medtl.cli import main
from medtl.errors import TrainingError, UnknownOptionError
from medtl.io import read_scan
from medtl.io.dicom_seg import _affine_4x4
from medtl.train import fine_tune, predict
from medtl.train.predict import load_run
from medtl.train.saliency import native_transforms

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def xray_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch resnet18 trained for one epoch on the sample radiographs (DICOM files and series folders), 32 px,
    its probabilities calibrated by a temperature."""
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(
        SAMPLE / "xray" / "manifest.csv",
        out,
        preprocess={"size": [32, 32]},
        train={"epochs": 1, "batch_size": 8, "precise_bn_batches": 2, "calibrate": "temperature"},
        output={"name": "xray"},
    )
    return fine_tune(cfg, quiet=True).run_dir


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch 3D ResNet-10 trained for one epoch on the sample CT volumes (NIfTI, 0.78 x 0.78 x 2 mm)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(
        SAMPLE / "ct_nifti" / "manifest.csv",
        out,
        data={"mode": "3d", "modality": "CT"},
        preprocess={"size": [32, 32, 16]},
        model={"arch": "resnet10_3d"},
        train={"epochs": 1, "batch_size": 8, "precise_bn_batches": 2},
        output={"name": "ct"},
    )
    return fine_tune(cfg, quiet=True).run_dir


def _network_input_of_the_run(loaded, image: str) -> torch.Tensor:
    d = loaded.pipeline.pre({"image": image})
    return loaded.pipeline.post_eval(d)["image"]


@pytest.mark.parametrize("which", ["xray", pytest.param("ct", marks=pytest.mark.slow)])
def test_native_transforms_give_the_network_input_the_run_gives(which: str, request: pytest.FixtureRequest) -> None:
    """The invertible preprocessing is the run's own: the same network input, bit for bit up to float rounding."""
    loaded = load_run(request.getfixturevalue(f"{which}_run"), quiet=True)
    image = str(SAMPLE / ("xray/01A5931E.dcm" if which == "xray" else "ct_nifti/03BCB0BE.nii.gz"))
    d = native_transforms(loaded.config, loaded.record)({"image": image})
    ours = loaded.pipeline.post_eval({"image": d["image"]})["image"]
    torch.testing.assert_close(ours, _network_input_of_the_run(loaded, image), rtol=1e-5, atol=1e-5)
    assert d["image"].applied_operations, "no transform recorded: Invertd could not put a map back"


def test_predict_saliency_writes_a_map_on_each_radiographs_own_grid(xray_run: Path, tmp_path: Path) -> None:
    scans = [SAMPLE / "xray" / "01A5931E.dcm", SAMPLE / "xray" / "0B42C270"]  # a file and a series folder
    out = tmp_path / "pred" / "predictions.csv"
    assert main(["predict", str(xray_run), *map(str, scans), "--out", str(out), "--saliency", "gradcam"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "saliency_class" not in rows[0]  # the CSV keeps its columns
    folder = out.parent / "saliency"
    for scan, name in zip(scans, ["01A5931E", "0B42C270"], strict=True):
        nifti = nib.load(folder / f"{name}_saliency.nii.gz")
        original = read_scan(scan)  # (C, columns, rows) with its affine
        assert nifti.shape == (*original.shape[1:], 1)
        np.testing.assert_allclose(nifti.affine, _affine_4x4(original.affine), atol=1e-5)
        data = np.asarray(nifti.dataobj)
        assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
        png = (folder / f"{name}_saliency.png").read_bytes()
        assert png.startswith(PNG_MAGIC)


@pytest.mark.slow  # trains a 3D network (about 20 s on two busy cores)
def test_predict_saliency_of_volumes_on_their_own_grid_for_a_named_class(ct_run: Path, tmp_path: Path) -> None:
    scans = [SAMPLE / "ct_nifti" / "03BCB0BE.nii.gz", SAMPLE / "ct_nifti" / "06752CEA.nii.gz"]
    for method in ("gradcam", "gradcampp"):
        rows = predict(ct_run, scans, out=tmp_path / method / "p.csv", saliency=method, saliency_class="positive")
        assert [r["saliency_class"] for r in rows] == ["positive", "positive"]
        for scan, row in zip(scans, rows, strict=True):
            written, given = nib.load(row["saliency_file"]), nib.load(scan)
            assert written.shape == given.shape
            np.testing.assert_allclose(written.affine, given.affine, atol=1e-4)
            data = np.asarray(written.dataobj)
            assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
            assert Path(row["saliency_png"]).read_bytes().startswith(PNG_MAGIC)


def test_a_run_draws_maps_of_its_first_test_patients_and_a_reliability_diagram(xray_run: Path) -> None:
    pngs = sorted((xray_run / "saliency").glob("*_saliency.png"))
    assert len(pngs) == 3 and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    assert not list((xray_run / "saliency").glob("*.nii.gz"))  # a run folder keeps the pictures only
    with open(xray_run / "predictions_test.csv", newline="") as fh:
        first = list(dict.fromkeys(r["patient_id"] for r in csv.DictReader(fh)))[:3]
    assert len(first) == 3
    assert (xray_run / "reliability.png").read_bytes().startswith(PNG_MAGIC)


def test_what_saliency_refuses(xray_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    scan = SAMPLE / "xray" / "01A5931E.dcm"
    with pytest.raises(UnknownOptionError, match="Did you mean 'gradcam'"):
        predict(xray_run, [scan], out=out, saliency="gradcan")
    with pytest.raises(UnknownOptionError, match="unknown class 'postive'"):
        predict(xray_run, [scan], out=out, saliency="gradcam", saliency_class="postive")
    with pytest.raises(TrainingError, match="no map is asked for"):
        predict(xray_run, [scan], out=out, saliency_class="positive")
    assert not out.exists()  # refused before any scan was read
    loaded = load_run(xray_run, quiet=True)
    record = SimpleNamespace(mode="2.5d")
    with pytest.raises(TrainingError, match="this run is 2.5D"):
        native_transforms(loaded.config, record)


def test_tasks_without_saliency_maps_refuse_in_one_line() -> None:
    from medtl.tasks.regression import RegressionTask

    task = RegressionTask.__new__(RegressionTask)
    with pytest.raises(TrainingError, match="not available for a regression run"):
        task.saliency(None, torch.zeros(1, 1, 4, 4))
    # and predict refuses --saliency for them before anything runs (an option of another task)
    assert "saliency" not in RegressionTask.predict_options


def test_the_sample_run_records_its_temperature_and_predict_applies_it(xray_run: Path, tmp_path: Path) -> None:
    result = json.loads((xray_run / "result.json").read_text())
    cal = result["calibration"]
    assert cal["method"] == "temperature" and cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    assert {"val_ece_before", "val_ece_after", "n_val_errors"} <= set(cal)
    assert result["metrics"]["val"]["ece"] == pytest.approx(cal["val_ece_after"])
    loaded = load_run(xray_run, quiet=True)
    assert loaded.task.temperature == cal["temperature"] != 1.0
    scan = SAMPLE / "xray" / "01A5931E.dcm"
    (row,) = predict(xray_run, [scan], out=tmp_path / "p.csv")
    x = _network_input_of_the_run(loaded, str(scan))[None]
    with torch.no_grad():
        logits = loaded.model(x)
    expected = (logits / cal["temperature"]).softmax(1)[0, 1].item()
    assert row[f"prob_{loaded.classes[1]}"] == pytest.approx(expected, abs=1e-5)
