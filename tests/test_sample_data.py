"""The committed sample_data equals what sample_data/generate.py writes, and each manifest loads."""

from __future__ import annotations

import collections
import gzip
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtl.data import Manifest
from medtl.utils import hash_patient_id

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TASKS = ("ct", "ct_nifti", "xray")
#: segmentation tasks drawn from the phantoms above: masks.py (NIfTI label maps) and dicom_seg.py (a DICOM SEG)
MASK_TASKS = ("ct_nifti_masks", "xray_masks", "ct_seg")


def _load_script(name: str):
    # sample_data/ is a data folder with its generating scripts, not an importable package: load a script by path
    spec = importlib.util.spec_from_file_location(f"medtl_sample_{name}", SAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _load_generator():
    return _load_script("generate")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample_data")
    _load_generator().generate(out)
    masks = _load_script("masks")
    for task in ("ct_nifti_masks", "xray_masks"):
        masks.generate(out, task=task)
    _load_script("dicom_seg").generate(out)
    return out


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("task", TASKS + MASK_TASKS)
def test_committed_data_equals_a_fresh_run(task: str, regenerated: Path) -> None:
    committed, fresh = SAMPLE / task, regenerated / task
    names = _files(committed)
    assert names == _files(fresh), "file names differ: run `make sample-data` and commit the result"
    for name in names:
        a, b = committed / name, fresh / name
        if name.endswith(".csv"):
            assert a.read_bytes() == b.read_bytes(), name
        elif name.endswith(".nii.gz"):
            # the gzip stream may differ between zlib builds; the NIfTI bytes inside may not
            assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes()), name
        else:
            # every element, pixel data included (file meta aside, which names the writing library)
            assert pydicom.dcmread(a) == pydicom.dcmread(b), name


def test_generator_is_deterministic_and_not_trivially_constant() -> None:
    gen = _load_generator()
    a = gen.ct_phantom(np.random.default_rng(7), (40, 40, 20), (0.8, 0.8, 2.5), True)
    b = gen.ct_phantom(np.random.default_rng(7), (40, 40, 20), (0.8, 0.8, 2.5), True)
    c = gen.ct_phantom(np.random.default_rng(7), (40, 40, 20), (0.8, 0.8, 2.5), False)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= -1024 and -1100 < np.median(a) < 100


@pytest.mark.parametrize(
    ("task", "n_scans", "n_patients", "n_files"),
    [("ct", 54, 44, 1143), ("ct_nifti", 48, 44, 49), ("xray", 52, 52, 53)],
)
def test_manifests_load(task: str, n_scans: int, n_patients: int, n_files: int) -> None:
    m = Manifest.from_csv(SAMPLE / task / "manifest.csv")
    assert m.classes == ["negative", "positive"]
    assert len(m) == n_scans
    assert len(set(m.patients)) == n_patients
    # the scans and manifest.csv (manifests of other tasks on the same scans, manifest_<task>.csv, aside)
    assert len([f for f in _files(SAMPLE / task) if not f.startswith("manifest_")]) == n_files
    counts = m.class_counts()
    assert abs(counts[0] - counts[1]) <= 2
    by_patient = collections.defaultdict(set)
    for r in m:
        by_patient[r.patient_id].add(r.label)
    assert all(len(labels) == 1 for labels in by_patient.values()), "a patient's scans share one label"


def test_ct_patients_come_from_dicom_and_two_studies_share_a_patient() -> None:
    m = Manifest.from_csv(SAMPLE / "ct" / "manifest.csv")
    studies = collections.defaultdict(set)
    for r in m:
        ds = pydicom.dcmread(next(r.image.iterdir()), stop_before_pixels=True)
        assert r.patient_id == hash_patient_id(ds.PatientID)
        studies[r.patient_id].add(ds.StudyInstanceUID)
    assert sum(len(s) == 2 for s in studies.values()) == 10


def test_ct_series_geometry_and_hounsfield_units() -> None:
    m = Manifest.from_csv(SAMPLE / "ct" / "manifest.csv")
    folder = m[0].image
    slices = [pydicom.dcmread(f) for f in folder.iterdir()]
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert {s.Modality for s in slices} == {"CT"}
    assert {float(s.RescaleIntercept) for s in slices} == {-1024.0}
    slices.sort(key=lambda s: float(s.ImagePositionPatient[2]))
    z = np.array([float(s.ImagePositionPatient[2]) for s in slices])
    np.testing.assert_allclose(np.diff(z), float(slices[0].SliceThickness), atol=1e-4)
    hu = np.stack([s.pixel_array.astype(float) * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
    assert hu.min() >= -1024 and hu.max() < 1200
    assert (hu < -500).mean() > 0.2 and (np.abs(hu - 40) < 100).mean() > 0.2  # air/lung and soft tissue
    pixel_reprs = set()
    for r in m:  # every series: one series per folder, slices exactly one SliceThickness apart
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in r.image.iterdir()]
        assert len({h.SeriesInstanceUID for h in headers}) == 1
        z = np.sort([float(h.ImagePositionPatient[2]) for h in headers])
        np.testing.assert_allclose(np.diff(z), float(headers[0].SliceThickness), atol=1e-6)
        pixel_reprs.add(headers[0].PixelRepresentation)
    assert pixel_reprs == {0, 1}  # both uint16 and int16 storage occur
    names = [f.name for r in m for f in r.image.iterdir()]
    assert any(n.endswith(".dcm") for n in names) and any("." not in n for n in names)


def test_xray_photometric_mix() -> None:
    m = Manifest.from_csv(SAMPLE / "xray" / "manifest.csv")
    headers = [pydicom.dcmread(r.image, stop_before_pixels=True) for r in m]
    assert {h.Modality for h in headers} == {"CR", "DX"}
    photometric = collections.Counter(h.PhotometricInterpretation for h in headers)
    assert photometric["MONOCHROME1"] >= 10 and photometric["MONOCHROME2"] >= 10
    assert all(96 <= h.Rows <= 128 and 96 <= h.Columns <= 128 for h in headers)


@pytest.mark.parametrize("task", TASKS)
def test_medtl_reads_the_first_scan_of_each_task(task: str) -> None:
    from medtl import read_scan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = Manifest.from_csv(SAMPLE / task / "manifest.csv")[0]
    img = read_scan(record.image)
    if task == "xray":
        assert img.ndim == 3 and img.shape[0] == 1
    else:  # HU volumes: air is clipped at -1024
        assert img.ndim == 4 and img.shape[0] == 1 and float(img.min()) == -1024.0
        assert img.meta["spacing"][0] == pytest.approx(img.meta["spacing"][1]) and img.meta["spacing"][2] >= 2.0
    if task != "ct_nifti":
        assert img.meta["patient_id"] == record.patient_id


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_radiographs_read_with_dense_structures_bright(photometric: str) -> None:
    from medtl import read_scan

    m = Manifest.from_csv(SAMPLE / "xray" / "manifest.csv")
    record = next(
        r for r in m if pydicom.dcmread(r.image, stop_before_pixels=True).PhotometricInterpretation == photometric
    )
    img = read_scan(record.image)  # (1, X, Y): X runs along columns
    cols = img.shape[1]
    spine = img[0, cols // 2 - 2 : cols // 2 + 2].float().mean()
    lungs = img[0, int(cols * 0.28) : int(cols * 0.32)].float().mean()
    air = img[0, :, :3].float().mean()  # the top rows are outside the body
    assert air < lungs < spine
