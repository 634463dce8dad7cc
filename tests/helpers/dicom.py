"""The one DICOM writer of the test suite: real files written with pydicom, read back with SimpleITK as a reference.

``write_image`` writes one file (a 2D image, or a multi-frame object from a 3D array); ``write_series`` writes a
geometric series of single-frame slices through it; ``write_radiograph`` and ``write_ct_stack`` are the two
shapes most tests need.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
NEW = "new"
"""Default of a UID argument: a fresh UID. ``None`` leaves the element out."""


def write_image(
    path: Path,
    pixels: np.ndarray | None,
    *,
    sop_class: str = CTImageStorage,
    modality: str | None = "CT",
    patient_id: str | None = "PAT-001",
    study_uid: str | None = NEW,
    series_uid: str | None = NEW,
    description: str | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags: Any,
) -> Path:
    """Write one DICOM file (Explicit VR Little Endian, with preamble and file meta).

    Args:
        path: Where to write; parent folders are created.
        pixels: (rows, cols) for one frame or (frames, rows, cols) for a multi-frame object; uint8, uint16 or int16
            stored values. ``None`` writes no pixel module (e.g. a structured report).
        sop_class: SOP Class UID.
        modality: Modality (None: left out).
        patient_id: PatientID (None: left out).
        study_uid: StudyInstanceUID; ``NEW`` generates one, None leaves it out.
        series_uid: SeriesInstanceUID; ``NEW`` generates one, None leaves it out.
        description: SeriesDescription (None: left out).
        photometric: PhotometricInterpretation.
        bits_stored: BitsStored (default: the bits allocated); HighBit follows.
        **tags: Further elements by keyword, e.g. ``PixelSpacing=[0.5, 0.5]``, set last.

    Returns:
        The path written.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    if patient_id is not None:
        ds.PatientID = patient_id
    if study_uid is not None:
        ds.StudyInstanceUID = generate_uid() if study_uid == NEW else study_uid
    if series_uid is not None:
        ds.SeriesInstanceUID = generate_uid() if series_uid == NEW else series_uid
    if description is not None:
        ds.SeriesDescription = description
    if pixels is not None:
        arr = np.asarray(pixels)
        if arr.ndim == 3:
            ds.NumberOfFrames = int(arr.shape[0])
        ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        bits = arr.dtype.itemsize * 8
        ds.BitsAllocated = bits
        ds.BitsStored = bits_stored or bits
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_radiograph(
    path: Path,
    pixels: np.ndarray,
    patient_id: str,
    *,
    modality: str = "DX",
    sop_class: str = DigitalXRayImageStorageForPresentation,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    pixel_spacing: tuple[float, float] | None = (0.5, 0.5),
    description: str | None = None,
    series_uid: str | None = NEW,
) -> Path:
    """One 2D radiograph (uint16 stored values unless ``pixels`` says otherwise)."""
    arr = np.asarray(pixels)
    if arr.dtype not in (np.uint8, np.int16):
        arr = arr.astype(np.uint16)
    tags = {"PixelSpacing": list(pixel_spacing)} if pixel_spacing is not None else {}
    return write_image(
        path,
        arr,
        sop_class=sop_class,
        modality=modality,
        patient_id=patient_id,
        photometric=photometric,
        bits_stored=bits_stored,
        description=description,
        series_uid=series_uid,
        **tags,
    )


def write_cr(path: Path, patient_id: str) -> str:
    """A CR radiograph of 8 rows x 7 columns (MONOCHROME1, 12 bits stored, values 0..55, description "PA", no pixel
    spacing); returns its SeriesInstanceUID."""
    uid = generate_uid()
    write_radiograph(
        path,
        np.arange(56, dtype=np.uint16).reshape(8, 7),
        patient_id,
        modality="CR",
        sop_class="1.2.840.10008.5.1.4.1.1.1",
        photometric="MONOCHROME1",
        bits_stored=12,
        pixel_spacing=None,
        description="PA",
        series_uid=uid,
    )
    return uid


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
    names: str | Sequence[str] = "random",
) -> list[Path]:
    """Write ``raw`` (slices, rows, cols; int16 or uint16 stored values) as one DICOM series.

    Slice k sits at ``origin + positions[k] * normal`` (default ``k * slice_spacing``). Files are written in shuffled
    order so nothing but the geometry gives the order. ``names``: ``"random"`` (hex names), ``"dcm"`` (hex names
    with a .dcm suffix) or one relative name per slice (slice k gets ``names[k]``; sub-folders are allowed).
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
    signed = raw.dtype == np.int16
    for instance, k in enumerate(order, start=1):
        s = slope[k] if isinstance(slope, Sequence) else slope
        b = intercept[k] if isinstance(intercept, Sequence) else intercept
        pos = np.asarray(origin, float) + positions[k] * normal
        tags: dict[str, Any] = {
            "PatientName": "Test^Patient",
            "FrameOfReferenceUID": frame_uid,
            "SeriesNumber": 1,
            "InstanceNumber": instance,  # deliberately unrelated to position
            "ImageOrientationPatient": [f"{v:.10f}" for v in iop],
            "ImagePositionPatient": [f"{v:.6f}" for v in pos],
            "PixelSpacing": [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"],
            "SliceThickness": f"{slice_spacing:g}",
            "RescaleSlope": f"{s:g}",
            "RescaleIntercept": f"{b:g}",
        }
        if modality == "CT":
            tags["RescaleType"] = "HU"
        if isinstance(names, str):
            hex_name = f"{rng.getrandbits(48):012x}"
            name = hex_name + (".dcm" if names == "dcm" else "")
        else:
            name = names[k]
        path = write_image(
            folder / name,
            raw[k].astype(np.int16 if signed else np.uint16),
            sop_class=CTImageStorage if modality == "CT" else MRImageStorage,
            modality=modality,
            patient_id=patient_id,
            study_uid=study_uid,
            series_uid=series_uid,
            description=description,
            photometric=photometric,
            **tags,
        )
        paths.append(path)
    return paths


def write_ct_stack(
    folder: Path, patient: str, n_slices: int = 3, *, description: str = "axial", names: Sequence[str] | None = None
) -> str:
    """A small axial CT series (slices of 5 rows x 6 columns, 0.8 x 0.7 mm, 2.5 mm apart, slice k stored as
    1000 + k); returns its SeriesInstanceUID. ``names`` defaults to ``{description}-{k:03d}``."""
    uid = generate_uid()
    raw = np.stack([np.full((5, 6), 1000 + k, np.int16) for k in range(n_slices)])
    write_series(
        folder,
        raw,
        origin=(0.0, 0.0, 0.0),
        series_uid=uid,
        description=description,
        patient_id=patient,
        names=list(names) if names else [f"{description}-{k:03d}" for k in range(n_slices)],
    )
    return uid


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
    """Random int16 stored values."""
    return np.random.default_rng(seed).integers(low, high, size=shape).astype(np.int16)


def highdicom_seg(datasets: Sequence[Dataset], pixels: np.ndarray, names: Sequence[str], **kw: Any) -> Any:
    """A BINARY DICOM SEG built by highdicom itself (not medtl) over ``datasets``: one segment per name (label as
    given), ``pixels`` one frame per source dataset (a label map, or one-hot with ``kw['pixel_array']``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, name in enumerate(names)
    ]
    return hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=kw.pop("pixel_array", pixels),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        **kw,
    )
