"""Fixtures of the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from seg_tasks import make_disc_task


@pytest.fixture(scope="session")
def disc_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disc_task(tmp_path_factory.mktemp("discs"))
