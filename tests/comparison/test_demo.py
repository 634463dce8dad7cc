"""The demo's generated radiographs and its built-in config."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from medtl.errors import ConfigError
from medtl.resources.demo_data import ensure_demo_data, write_demo_xray

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_demo_data_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    write_demo_xray(tmp_path / "a", 8)
    write_demo_xray(tmp_path / "b", 8)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 9 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    write_demo_xray(tmp_path / "c", 8, seed=1)
    assert _files(tmp_path / "c")["manifest.csv"] != a["manifest.csv"] or any(
        _files(tmp_path / "c")[k] != a[k] for k in a
    )


def test_demo_data_is_balanced_dicom_with_one_patient_per_image(tmp_path: Path) -> None:
    from medtl.data import Manifest

    manifest = write_demo_xray(tmp_path, 10)
    m = Manifest.from_csv(manifest)
    records = m.to_dicts()
    assert len(records) == 10 and len({r["patient_id"] for r in records}) == 10
    assert sorted(r["label_name"] for r in records) == ["negative"] * 5 + ["positive"] * 5
    ds = pydicom.dcmread(tmp_path / records[0]["image"])
    assert ds.Modality in ("CR", "DX") and 96 <= ds.Rows <= 128 and 96 <= ds.Columns <= 128
    assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
    assert 0 <= int(ds.pixel_array.min()) and int(ds.pixel_array.max()) <= 4095


def test_ensure_demo_data_reuses_an_identical_copy_and_replaces_a_different_one(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    manifest = ensure_demo_data(folder, 6)
    first = _files(folder)
    stamp_time = (folder / "manifest.csv").stat().st_mtime_ns
    assert ensure_demo_data(folder, 6) == manifest
    assert (folder / "manifest.csv").stat().st_mtime_ns == stamp_time  # not rewritten
    (folder / "stray.dcm").write_bytes(b"x")
    ensure_demo_data(folder, 8)
    second = _files(folder)
    assert "stray.dcm" not in second and len([k for k in second if k.endswith(".dcm")]) == 8
    assert json.loads((folder / ".medtl-demo-data.json").read_text())["n_patients"] == 8
    assert {k: v for k, v in first.items() if k != ".medtl-demo-data.json"} != second


def test_demo_data_refuses_too_few_patients(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 4"):
        write_demo_xray(tmp_path, 2)


def test_built_in_demo_config_allows_a_verdict_at_full_labels(tmp_path: Path) -> None:
    from medtl.comparison.compare import load_compare_config
    from medtl.comparison.demo import FULL_OVERRIDES, demo_config, demo_data_settings

    settings = demo_data_settings()
    assert settings["patients"] >= 300  # enough test patients for a narrow interval (see demo_xray.yaml)
    manifest = write_demo_xray(tmp_path, 8)
    cfg = load_compare_config(demo_config(manifest))
    assert cfg.compare.seeds >= 3 and 1.0 in cfg.compare.fractions
    assert Path(cfg.experiment.data.manifest) == manifest.resolve()
    full = load_compare_config(demo_config(manifest), FULL_OVERRIDES)
    assert full.compare.seeds >= 3 and 1.0 in full.compare.fractions
