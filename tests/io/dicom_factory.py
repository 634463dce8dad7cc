"""Helpers for the io tests: write real DICOM series with pydicom, read them back with SimpleITK as a reference."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def oblique_iop(deg_a: float = 20.0, deg_b: float = 15.0) -> tuple[float, ...]:
    """Orthonormal row/column cosines rotated about z by ``deg_a`` then about x by ``deg_b``."""
    a, b = np.deg2rad(deg_a), np.deg2rad(deg_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    return tuple(float(v) for v in np.concatenate([r[:, 0], r[:, 1]]))


def write_series(
    folder: Path,
    raw: np.ndarray,
    *,
    iop: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-20.0, -15.0, 30.0),
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_spacing: float = 2.5,
    positions: Sequence[float] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "synthetic",
    modality: str = "CT",
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    photometric: str = "MONOCHROME2",
    patient_id: str = "PAT-001",
    seed: int = 0,
    names: str = "random",
) -> list[Path]:
    """Write ``raw`` (slices, rows, cols; int16 or uint16 stored values) as one DICOM series.

    Slice k sits at ``origin + positions[k] * normal`` (default ``k * slice_spacing``). File names are
    random and files are written in shuffled order so nothing but the geometry gives the order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    n = raw.shape[0]
    positions = list(positions) if positions is not None else [k * slice_spacing for k in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    paths = []
    frame_uid = generate_uid()
    for instance, k in enumerate(order, start=1):
        ds = Dataset()
        meta = FileMetaDataset()
        sop_class = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = "Test^Patient"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = instance  # deliberately unrelated to position
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in iop]
        pos = np.asarray(origin, float) + positions[k] * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.PixelSpacing = [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"]
        ds.SliceThickness = f"{slice_spacing:g}"
        ds.Rows, ds.Columns = int(raw.shape[1]), int(raw.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        signed = raw.dtype == np.int16
        ds.PixelRepresentation = 1 if signed else 0
        s = slope[k] if isinstance(slope, Sequence) else slope
        b = intercept[k] if isinstance(intercept, Sequence) else intercept
        ds.RescaleSlope = f"{s:g}"
        ds.RescaleIntercept = f"{b:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(raw[k].astype(np.int16 if signed else np.uint16)).tobytes()
        name = f"{rng.getrandbits(48):012x}" + (".dcm" if names == "dcm" else "")
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sitk_read(folder: Path, series_uid: str | None = None) -> tuple[Any, np.ndarray]:
    """SimpleITK ImageSeriesReader on ``folder``: the image and its array as (x, y, z)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    uid = series_uid or ids[0]
    files = reader.GetGDCMSeriesFileNames(str(folder), uid)
    reader.SetFileNames(files)
    img = reader.Execute()
    return img, sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def sitk_world_ras(img: Any, index: Sequence[int]) -> np.ndarray:
    """World point of a voxel index in SimpleITK, converted from LPS to RAS."""
    p = np.asarray(img.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)), dtype=np.float64)
    return p * np.array([-1.0, -1.0, 1.0])


def medtl_world(scan: Any, index: Sequence[float]) -> np.ndarray:
    """World point (RAS) of a voxel index under a scan's affine."""
    a = np.asarray(scan.affine, dtype=np.float64)
    return (a @ np.array([*index, 1.0]))[:3]


def random_raw(shape: tuple[int, int, int], seed: int = 0, low: int = 0, high: int = 3000) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int16)
