"""Fixtures of the engine tests: small learnable tasks written as real files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from train_tasks import make_volume_task, make_xray_task


@pytest.fixture(scope="session")
def xray_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_xray_task(tmp_path_factory.mktemp("xray"))


@pytest.fixture(scope="session")
def volume_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_volume_task(tmp_path_factory.mktemp("vol"))


def _install_manifest_stand_in() -> None:
    """Until medtl.data.Manifest exists, read the tests' simple manifests with a private stand-in."""
    try:
        from medtl.data import Manifest  # noqa: F401

        return
    except ImportError:
        pass
    import medtl.train.run as run

    class _Manifest:
        def __init__(self, path: Path, classes: list[str] | None) -> None:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            self.classes = classes or sorted({r["label"] for r in rows})
            self._dicts = [
                {
                    "image": str((Path(path).parent / r["image"]).resolve()),
                    "label": self.classes.index(r["label"]),
                    "label_name": r["label"],
                    "patient_id": r.get("patient_id") or f"auto{i}",
                    "split": r.get("split") or None,
                    "series": None,
                    "row": i + 2,
                }
                for i, r in enumerate(rows)
            ]

        def __len__(self) -> int:
            return len(self._dicts)

        def to_dicts(self) -> list[dict[str, Any]]:
            return [dict(d) for d in self._dicts]

    run._load_manifest = lambda cfg: _Manifest(cfg.data.manifest, cfg.data.classes)  # type: ignore[assignment]


_install_manifest_stand_in()
