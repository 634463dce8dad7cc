"""Fixtures of the pretraining tests: a tiny unlabeled pool written by sample_data/unlabeled.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """16 radiographs (DICOM) and 8 CT volumes (NIfTI), each with a one-column manifest.csv."""
    out = tmp_path_factory.mktemp("pool")
    subprocess.run(
        [sys.executable, str(ROOT / "sample_data" / "unlabeled.py"), str(out), "--n2d", "16", "--n3d", "8"],
        check=True,
        capture_output=True,
    )
    return {"xray": out / "xray" / "manifest.csv", "ct": out / "ct" / "manifest.csv", "root": out}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MEDTL_HOME of this test only: the local weight registry starts empty."""
    path = tmp_path / "medtl-home"
    monkeypatch.setenv("MEDTL_HOME", str(path))
    return path
