"""Header reading for indexes: the raw tag scan agrees with pydicom; the on-disk cache follows the files."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers.dicom import random_raw, write_ct_stack, write_series

import medtl.io.dicom.files as dicom_files
from medtl.io import inspect_path
from medtl.io.dicom import read_header
from medtl.io.dicom.tagscan import scan_tags
from medtl.io.index_cache import open_header_cache


def _pydicom_header(path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(dicom_files, "scan_tags", lambda *a: None)
        try:
            return dataclasses.asdict(read_header(path))
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__


def test_tag_scan_gives_the_same_header_as_pydicom_on_the_pydicom_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings.simplefilter("ignore")
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() not in (".py", ".json", ".txt")]
    assert len(files) > 100
    scanned = 0
    for p in files:
        scanned += scan_tags(p, p.stat().st_size) is not None
        try:
            fast: object = dataclasses.asdict(read_header(p))
        except Exception as exc:  # noqa: BLE001
            fast = type(exc).__name__
        assert fast == _pydicom_header(p, monkeypatch), p.name
    assert scanned > len(files) // 2  # most files take the fast path


def test_implicit_vr_sequences_and_long_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian

    paths = write_series(tmp_path / "s", random_raw((2, 4, 4)), description="axial")
    for n, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3"
        item.ReferencedImageSequence = Sequence([Dataset()])  # nested, undefined length when written implicit
        ds.ReferencedImageSequence = Sequence([item, Dataset()])
        ds.add_new(0x00291010, "OB", bytes(300_000 if n == 0 else 10))  # a header longer than the first read
        if n == 1:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(p, implicit_vr=n == 1, little_endian=True)
    for p in paths:
        assert dataclasses.asdict(read_header(p)) == _pydicom_header(p, monkeypatch)


def test_a_second_index_comes_from_the_cache_and_follows_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    root = tmp_path / "tree"
    write_ct_stack(root / "a", "PA", 4)
    write_ct_stack(root / "b", "PB", 3)
    (root / "junk.dcm").write_bytes(b"not dicom" * 50)
    first = inspect_path(root).to_dict()
    reads: list[Path] = []
    real = dicom_files._header_or_reason
    monkeypatch.setattr(dicom_files, "_header_or_reason", lambda p, size=None: reads.append(p) or real(p, size))
    assert inspect_path(root).to_dict() == first and reads == []  # headers and reasons both cached
    # a changed file is read again; the others are not
    changed = sorted((root / "b").iterdir())[0]
    ds = pydicom.dcmread(changed)
    ds.SeriesDescription = "changed"
    ds.save_as(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    again = inspect_path(root)
    assert reads == [changed]
    descriptions = {h.path: h.description for s in again.series for h in s._headers}
    assert descriptions[changed] == "changed" and sorted(descriptions.values()).count("axial") == 6
    # a new secret forgets every cached pseudonym
    reads.clear()
    monkeypatch.setenv("MEDTL_ID_SECRET", "another-secret-0123456789")
    assert len(inspect_path(root).series) == 2 and len(reads) == 8
    cache_file = open_header_cache().path
    assert oct(cache_file.stat().st_mode & 0o777) == "0o600"
    assert b"PA" not in cache_file.read_bytes().replace(b"PATIENT", b"")


def test_the_cache_can_be_off_or_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tree"
    write_ct_stack(root / "a", "PA", 3)
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDTL_INDEX_CACHE", "0")
    assert len(inspect_path(root).series) == 1
    assert not (tmp_path / "home" / "cache").exists()
    monkeypatch.delenv("MEDTL_INDEX_CACHE")
    (tmp_path / "home" / "cache").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "home" / "cache").write_text("a file where the cache folder should be")
    assert len(inspect_path(root).series) == 1  # no cache, same answer


def test_a_large_tree_is_read_by_a_process_pool_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTL_INDEX_CACHE", "0")
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 8)
    root = tmp_path / "tree"
    for k in range(4):
        write_series(root / f"s{k}", np.full((5, 4, 4), k, np.int16), patient_id=f"P{k}", description=f"d{k}")
    monkeypatch.setenv("MEDTL_IO_WORKERS", "2")
    pooled = inspect_path(root).to_dict()
    monkeypatch.setenv("MEDTL_IO_WORKERS", "1")
    assert inspect_path(root).to_dict() == pooled
    assert sorted(s["description"] for s in pooled["series"]) == ["d0", "d1", "d2", "d3"]


def test_a_file_replaced_with_its_old_size_and_mtime_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    root = tmp_path / "tree"
    write_ct_stack(root / "a", "PA", 3, description="axial")
    assert {s.description for s in inspect_path(root).series} == {"axial"}
    target = sorted((root / "a").iterdir())[0]
    before = target.stat()
    time.sleep(0.01)
    ds = pydicom.dcmread(target)
    ds.SeriesDescription = "sagit"  # as long as "axial": the same file size
    ds.save_as(target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or rsync would keep it
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    headers = {h.path: h for s in inspect_path(root).series for h in s._headers}
    assert headers[target].description == "sagit"
