"""Clear errors: bad config, empty manifest, a class without training patients, a scan failing mid-epoch."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from helpers.tasks import base_config

from medtl.errors import ConfigError, DataLoadError, ManifestError, TrainingError
from medtl.train import fine_tune


def _copy_task(src_manifest: Path, dst: Path) -> tuple[Path, list[dict[str, str]]]:
    shutil.copytree(src_manifest.parent, dst)
    with open(dst / "manifest.csv", newline="") as fh:
        return dst / "manifest.csv", list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict[str, str]], fields: list[str] | None = None) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields or list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_bad_config_names_the_field(xray_task: Path, tmp_path: Path) -> None:
    cfg = base_config(xray_task, tmp_path, train={"schedule": "fastai"})
    with pytest.raises(ConfigError, match=r"train\.schedule: 'fastai' is not allowed; allowed: 'auto', 'fine_tune'"):
        fine_tune(cfg, quiet=True)


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("image,label,patient_id\n")
    with pytest.raises(ManifestError, match="manifest"):
        fine_tune(base_config(tmp_path / "manifest.csv", tmp_path / "runs"), quiet=True)


def test_class_without_training_patients(xray_task: Path, tmp_path: Path) -> None:
    manifest, rows = _copy_task(xray_task, tmp_path / "task")
    for i, r in enumerate(rows):
        # every positive patient is in val or test
        r["split"] = ("val" if i % 4 == 1 else "test") if r["label"] == "positive" else ["train", "val", "test"][i % 3]
    _write(manifest, rows)
    with pytest.raises(TrainingError, match=r"class\(es\) \['positive'\] have no training patients"):
        fine_tune(base_config(manifest, tmp_path / "runs"), quiet=True)


def test_scan_failing_mid_epoch_is_reported_with_its_path(xray_task: Path, tmp_path: Path) -> None:
    manifest, rows = _copy_task(xray_task, tmp_path / "task")
    for r in rows:
        r["split"] = "val" if r["patient_id"] in ("PX000", "PX001") else "train"
    _write(manifest, rows)
    bad = manifest.parent / rows[5]["image"]
    cfg = base_config(manifest, tmp_path / "runs", preprocess={"size": [16, 16]}, train={"epochs": 1, "cache": "none"})
    # the file is fine when the manifest is checked, and truncated when the training loop reaches it
    import medtl.train.run as run

    original = run.make_loader

    def truncate_then_load(*args, **kwargs):  # noqa: ANN002, ANN003
        bad.write_bytes(bad.read_bytes()[:200])
        return original(*args, **kwargs)

    run.make_loader = truncate_then_load
    try:
        with pytest.raises(DataLoadError) as err:
            fine_tune(cfg, quiet=True)
    finally:
        run.make_loader = original
    assert err.value.path == str(bad.resolve())
    assert str(bad.resolve()) in str(err.value) and "manifest row 7" in str(err.value)
