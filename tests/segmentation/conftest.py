"""Fixtures of the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.seg_tasks import make_disc_task, sample_module


@pytest.fixture(scope="session")
def disc_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disc_task(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="session")
def xray_masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample radiographs and their lung-field masks, generated into a fresh folder: its manifest.csv."""
    root = tmp_path_factory.mktemp("xray-seg")
    sample_module("generate").write_xray(root / "xray")
    return sample_module("masks").generate(root, task="xray_masks") / "manifest.csv"
