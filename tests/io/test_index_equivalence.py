"""The raw tag scan (and the helper processes, and the header cache) index a tree exactly as pydicom does.

One varied tree: several patients and series (two in one folder), explicit and implicit VR, nested sequences, a
series with a gap, descriptions holding the patient's name, ID and accession number, a non-ASCII name, compressed
files (RLE, JPEG 2000), multi-frame objects (RT dose, enhanced CT), a file cut inside its header, one with a broken
value, files that are not DICOM. Every way of reading it must give the same manifest rows, the same series with
the same problems, the same unreadable files with the same reasons, and the same header record for every file.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from helpers.dicom import random_raw, write_image, write_series
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

import medtl.io.dicom.files as dicom_files
from medtl.data.index import index_tree
from medtl.io import inspect_path
from medtl.io.dicom import read_headers, tagscan
from medtl.io.scan_index import walk_files


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    warnings.simplefilter("ignore")
    root = tmp_path_factory.mktemp("equivalence") / "tree"
    # patient A: two CT series in one folder; the description holds the patient's name
    write_series(root / "A" / "ct", random_raw((4, 6, 5)), patient_id="PAT-A", description="Test Patient chest")
    write_series(
        root / "A" / "ct", random_raw((3, 6, 5), 1), patient_id="PAT-A", description="thick", slice_spacing=5, slope=0.5
    )
    # patient B: MR written implicit VR with nested sequences and items of undefined length, the ID and accession
    # number in the description
    for p in write_series(
        root / "B" / "mr", random_raw((3, 4, 4), 2), modality="MR", patient_id="PAT-B", description="PAT-B t1"
    ):
        ds = pydicom.dcmread(p)
        item, inner = Dataset(), Dataset()
        item.ReferencedSOPInstanceUID = inner.ReferencedSOPInstanceUID = "1.2.3.4"
        item.ReferencedImageSequence = Sequence([inner])
        item["ReferencedImageSequence"].is_undefined_length = True
        ds.ReferencedImageSequence = Sequence([item, Dataset()])
        ds["ReferencedImageSequence"].is_undefined_length = True
        for it in ds.ReferencedImageSequence:
            it.is_undefined_length_sequence_item = True
        ds.AccessionNumber = "ACC-77"
        ds.SeriesDescription = "PAT-B t1 acc-77"
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(p, implicit_vr=True, little_endian=True)
    # patient C: a series with a missing slice (a gap), and a non-ASCII name in Latin-1 repeated in the description
    write_series(root / "C" / "gap", random_raw((4, 4, 4), 3), patient_id="PAT-C", positions=[0, 2.5, 5, 10])
    for p in write_series(root / "C" / "latin", random_raw((2, 4, 4), 4), patient_id="PAT-C", description="x"):
        ds = pydicom.dcmread(p)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = "Müller^Jörg"
        ds.SeriesDescription = "Müller knee"
        ds.save_as(p)
    # patient D: an RLE-compressed radiograph and a classic multi-frame object
    rle = write_image(
        root / "D" / "dx.dcm",
        np.arange(48, dtype=np.uint16).reshape(6, 8),
        modality="DX",
        patient_id="PAT-D",
        sop_class="1.2.840.10008.5.1.4.1.1.1.1",
        description="hand",
        PixelSpacing=[0.2, 0.2],
        PatientName="Doe^Jane",
    )
    ds = pydicom.dcmread(rle)
    ds.compress(RLELossless)
    ds.save_as(rle)
    write_image(
        root / "D" / "frames.dcm",
        random_raw((3, 4, 5), 5),
        patient_id="PAT-D",
        description="cine",
        PixelSpacing=[0.5, 0.5],
        ImagePositionPatient=[0, 0, 0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
    )
    # files of other writers: RLE and JPEG 2000 MR/NM, an RT dose (multi-frame, implicit VR), an enhanced CT
    # (and MR_truncated.dcm, whose pixel data ends early: an image for the index, which reads no pixel)
    (root / "E").mkdir()
    for name in ("MR_small_RLE.dcm", "JPEG2000.dcm", "rtdose.dcm", "eCT_Supplemental.dcm", "MR_truncated.dcm"):
        shutil.copy(get_testdata_file(name), root / "E" / name)
    # what cannot be read: a file cut inside its header, a broken value, text posing as DICOM, a bare text file
    good = sorted((root / "A" / "ct").iterdir())[0]
    (root / "F").mkdir()
    (root / "F" / "cut.dcm").write_bytes(good.read_bytes()[:300])
    bad = pydicom.dcmread(good)
    bad.NumberOfFrames, bad.SeriesInstanceUID = 11, "1.2.3.99"
    bad.save_as(root / "F" / "bad-value.dcm")
    element = b"\x28\x00\x08\x00IS\x02\x0011"  # NumberOfFrames "11" becomes "1A" (pydicom refuses to write it)
    data = (root / "F" / "bad-value.dcm").read_bytes()
    (root / "F" / "bad-value.dcm").write_bytes(data.replace(element, element[:-1] + b"A"))
    (root / "F" / "notes.dcm").write_bytes(b"not a DICOM file at all" * 10)
    (root / "F" / "README").write_text("scans exported from the PACS")
    return root


def _index(root: Path) -> dict[str, Any]:
    """Everything an index says about ``root``: manifest rows, series, unreadable files, and each file's header."""
    files = [p for p, _, _ in walk_files(root)[0]]
    headers = read_headers(files, workers=1)
    return {
        "manifest": index_tree(root).to_dict(),
        "inspect": inspect_path(root).to_dict(),
        "headers": [h if isinstance(h, str) else dataclasses.asdict(h) for h in headers],
    }


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("MEDTL_ID_SECRET", "equivalence-test-secret-0123456789")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDTL_INDEX_CACHE", "0")
    monkeypatch.setenv("MEDTL_IO_WORKERS", "1")
    return monkeypatch


def _pydicom_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom_files, "scan_tags", lambda *a: None)


@pytest.fixture
def reference(tree: Path, settings: pytest.MonkeyPatch) -> dict[str, Any]:
    with settings.context() as m:
        _pydicom_only(m)
        return _index(tree)


def test_the_tree_is_as_varied_as_it_claims(tree: Path, reference: dict[str, Any]) -> None:
    manifest, inspected = reference["manifest"], reference["inspect"]
    descriptions = {s["description"] for s in inspected["series"]}
    assert {"[removed] [removed] chest", "[removed] t1 [removed]", "[removed] knee", "hand", "thick"} <= descriptions
    assert any(r["series"] for r in manifest["rows"])  # two series in one folder
    assert any("gap" in p for s in inspected["series"] for p in s["problems"])
    assert any(s["n_slices"] == 15 for s in inspected["series"])  # the RT dose's frames
    reasons = {Path(u["path"]).name: u["reason"] for u in manifest["unreadable"]}
    assert {"cut.dcm", "bad-value.dcm", "notes.dcm", "README"} <= set(reasons)
    assert "not an integer" in reasons["bad-value.dcm"] and "not a DICOM file" in reasons["notes.dcm"]
    assert sum(isinstance(h, str) for h in reference["headers"]) == 3  # bad value, text, README


def test_the_tag_scan_indexes_as_pydicom_does(tree: Path, settings: pytest.MonkeyPatch, reference: dict) -> None:
    to_pydicom: set[str] = set()
    real = dicom_files.scan_tags

    def scan(path: Path, size: int) -> Any:
        raw = real(path, size)
        if raw is None:
            to_pydicom.add(Path(path).relative_to(tree).as_posix())
        return raw

    settings.setattr(dicom_files, "scan_tags", scan)
    assert _index(tree) == reference
    # only these need pydicom: Latin-1 text, an enhanced multi-frame object, files without a DICOM preamble or cut
    # inside the header (the implicit VR, compressed, multi-frame and RT dose files all take the fast path)
    latin = {f"C/latin/{p.name}" for p in (tree / "C" / "latin").iterdir()}
    assert to_pydicom == latin | {"E/eCT_Supplemental.dcm", "F/README", "F/cut.dcm", "F/notes.dcm"}


def test_helper_processes_index_as_pydicom_does(tree: Path, settings: pytest.MonkeyPatch, reference: dict) -> None:
    settings.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    settings.setenv("MEDTL_IO_WORKERS", "3")
    found = _index(tree)
    assert found["manifest"] == reference["manifest"] and found["inspect"] == reference["inspect"]


def test_headers_from_the_cache_index_as_pydicom_does(
    tree: Path, settings: pytest.MonkeyPatch, reference: dict
) -> None:
    settings.setenv("MEDTL_INDEX_CACHE", "1")
    first = index_tree(tree).to_dict()
    reads: list[Path] = []
    real = dicom_files._header_or_reason
    settings.setattr(dicom_files, "_header_or_reason", lambda p, size=None: reads.append(p) or real(p, size))
    again = index_tree(tree).to_dict()
    assert first == reference["manifest"] and again == reference["manifest"]
    assert not reads  # the second index read no file


def _drop(tag: int) -> Any:
    def scan(path: Any, size: int) -> Any:
        raw = real_scan(path, size)
        if raw is not None:
            raw.values.pop(tagscan.WANTED[tag], None)
        return raw

    return scan


def _change(tag: int) -> Any:
    def scan(path: Any, size: int) -> Any:
        raw = real_scan(path, size)
        if raw is not None and tagscan.WANTED[tag] in raw.values:
            value = raw.values[tagscan.WANTED[tag]]
            raw.values[tagscan.WANTED[tag]] = value[:-1] + (b"7" if value[-1:] != b"7" else b"8")
        return raw

    return scan


real_scan = tagscan.scan_tags


@pytest.mark.parametrize(
    "broken",
    [
        _drop(0x0008103E),  # SeriesDescription
        _drop(0x00100010),  # PatientName: the description keeps the name
        _drop(0x00281053),  # RescaleSlope: in no manifest column, only in the headers
        _change(0x00280030),  # PixelSpacing
        _change(0x00200032),  # ImagePositionPatient
    ],
    ids=["drop-description", "drop-name", "drop-slope", "change-spacing", "change-position"],
)
def test_a_fast_path_that_drops_or_changes_a_value_is_caught(
    tree: Path, settings: pytest.MonkeyPatch, reference: dict, broken: Any
) -> None:
    """The comparison above is not blind: a scan that loses or alters one value gives a different index."""
    settings.setattr(dicom_files, "scan_tags", broken)
    assert _index(tree) != reference
