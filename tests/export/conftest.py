"""Fixtures of the export tests: tiny runs trained on the sample radiographs and CT series."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.export import SAMPLE, sample_subset, tiny_config


@pytest.fixture(scope="session")
def xray_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2D resnet18 trained for one epoch on 12 sample radiographs (DICOM files) at 32 x 32."""
    from medtl.train import fine_tune

    root = tmp_path_factory.mktemp("xray-run")
    manifest = sample_subset(SAMPLE / "xray" / "manifest.csv", root / "manifest.csv", 12)
    cfg = tiny_config(manifest, root / "runs", "xray", preprocess={"size": [32, 32]})
    return fine_tune(cfg, quiet=True).run_dir


@pytest.fixture(scope="session")
def ct_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3D resnet18_3d (MONAI, zero-padding shortcuts) trained for one epoch on 10 sample CT series (DICOM
    folders), reoriented to RAS, CT window, 16 x 16 x 8."""
    from medtl.train import fine_tune

    root = tmp_path_factory.mktemp("ct-run")
    manifest = sample_subset(SAMPLE / "ct" / "manifest.csv", root / "manifest.csv", 10)
    cfg = tiny_config(
        manifest,
        root / "runs",
        "ct",
        data={"mode": "3d", "modality": "CT"},
        preprocess={"orientation": "RAS", "size": [16, 16, 8], "ct_window": [-1000, 400]},
        model={"arch": "resnet18_3d"},
    )
    return fine_tune(cfg, quiet=True).run_dir
