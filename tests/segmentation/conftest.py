"""Fixtures of the segmentation tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from seg_tasks import make_disc_task

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


@pytest.fixture(scope="session")
def disc_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disc_task(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="session")
def xray_masks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample radiographs and their lung-field masks, generated into a fresh folder: its manifest.csv."""
    root = tmp_path_factory.mktemp("xray-seg")
    sample_module("generate").write_xray(root / "xray")
    return sample_module("masks").generate(root, task="xray_masks") / "manifest.csv"
