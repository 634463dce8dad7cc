"""Fixtures of the engine tests: small learnable tasks written as real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tasks import make_volume_task, make_xray_task


@pytest.fixture(scope="session")
def xray_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_xray_task(tmp_path_factory.mktemp("xray"))


@pytest.fixture(scope="session")
def volume_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_volume_task(tmp_path_factory.mktemp("vol"))
