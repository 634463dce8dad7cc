"""The demo's data: synthetic chest radiographs written as DICOM files at demo time, the same bytes every time.

``medtl demo`` needs far more test patients than the 52 committed sample radiographs hold: with 16 test
patients the paired interval of an AUROC difference is about ±0.15 wide, so a real +0.1 reads as "no
significant difference". :func:`ensure_demo_data` writes as many patients as the demo asks for (a few
hundred take seconds), with the look of ``sample_data/xray`` (``sample_data/generate.py``): body, lungs,
heart, spine, ribs, clavicles, vessel markings, scar-like lines, and one opacity per image that is round
in the positive class and elongated (same area and contrast) in the negative one.

The module is part of the installed package (``sample_data/`` is not), so the phantom
(:func:`xray_phantom`) and the DICOM header (:func:`radiograph_dataset`) live here, and
``sample_data/generate.py`` writes the committed sample radiographs with them.

Determinism: one seeded ``numpy.random.Generator``, UIDs derived by hashing, fixed DICOM file meta, and
only arithmetic and square roots on the draws, so two calls write identical files (checked by the tests).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import ConfigError, MedtlError

__all__ = [
    "DEMO_SEED",
    "GENERATOR_VERSION",
    "derived_uid",
    "radiograph_dataset",
    "xray_phantom",
    "write_demo_xray",
    "ensure_demo_data",
]

DEMO_SEED = 20261201
#: Bump when the written bytes change, so a stale generated copy is replaced instead of reused.
GENERATOR_VERSION = 1
CLASSES = ("negative", "positive")

_IMPLEMENTATION_CLASS_UID = "2.25.264532618102648383474718617040853432101"
_IMPLEMENTATION_VERSION = "MEDTL_DEMO_1"
_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_STAMP = ".medtl-demo-data.json"


def derived_uid(*parts: object) -> str:
    """A deterministic UID under the ``2.25`` (UUID-derived) root, from hashing ``parts``."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"2.25.{int(digest[:30], 16)}"


def _soft_ellipse(coords: Sequence[np.ndarray], center: Sequence[float], radii: Sequence[float], edge: float = 1.0):
    r2 = sum(((c - c0) / r) ** 2 for c, c0, r in zip(coords, center, radii, strict=True))
    r = np.sqrt(r2)
    width = edge / float(min(radii))
    return np.clip((1.0 - r) / width + 0.5, 0.0, 1.0)


def _segment_distance(x: np.ndarray, y: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((x - (p0[0] + t * d[0])) ** 2 + (y - (p0[1] + t * d[1])) ** 2)


def xray_phantom(rng: np.random.Generator, shape: tuple[int, int], positive: bool) -> np.ndarray:
    """A chest-radiograph-like attenuation image (0 = air, larger = denser), indexed ``[row, column]``.

    The same function as ``sample_data/generate.py``'s (see the module docstring): the classes differ
    only in the shape of one opacity in a lung field, round (radius 5.5-8.5 px) or 2.5-3.5 times elongated.
    """
    rows, cols = shape
    y, x = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    cx = cols / 2 + rng.uniform(-2, 2)
    cy = rows / 2 + rng.uniform(-2, 2)

    img = np.zeros(shape)
    body = _soft_ellipse(
        (x, y), (cx, cy + rows * 0.05), (cols * rng.uniform(0.42, 0.47), rows * rng.uniform(0.55, 0.62))
    )
    img += body * rng.uniform(0.45, 0.55)

    lungs = np.zeros(shape)
    lung_fields = []
    for side in (-1, 1):
        lcx = cx + side * cols * rng.uniform(0.18, 0.21)
        lcy = cy - rows * rng.uniform(0.0, 0.05)
        lrx = cols * rng.uniform(0.13, 0.16)
        lry = rows * rng.uniform(0.28, 0.33)
        lungs = np.maximum(lungs, _soft_ellipse((x, y), (lcx, lcy), (lrx, lry), edge=1.5))
        lung_fields.append((lcx, lcy, lrx, lry))
    img -= lungs * rng.uniform(0.25, 0.32)

    heart = _soft_ellipse((x, y), (cx + cols * 0.05, cy + rows * 0.12), (cols * 0.13, rows * 0.15), edge=2.0)
    img += heart * 0.12 * lungs + heart * 0.05
    spine = np.clip(cols * 0.045 - np.abs(x - cx), 0.0, 1.0) * body
    img += spine * rng.uniform(0.15, 0.22)

    rib = rng.uniform(0.10, 0.16)
    for side in (-1, 1):
        for k in range(6):
            y0 = cy - rows * 0.28 + k * rows * 0.105 + rng.uniform(-1.5, 1.5)
            curve = y0 + 0.012 * (x - cx) ** 2 / (cols / 100.0) - side * 0.15 * (x - cx)
            band = np.clip(1.6 - np.abs(y - curve), 0.0, 1.0)
            half = np.clip(side * (x - cx) - cols * 0.03, 0.0, 1.0)
            img += band * half * body * rib
    for side in (-1, 1):
        p0 = np.array([cx + side * cols * 0.05, cy - rows * 0.33])
        p1 = np.array([cx + side * cols * 0.38, cy - rows * 0.38])
        img += np.clip(2.0 - _segment_distance(x, y, p0, p1), 0.0, 1.0) * body * rib

    def lung_point(margin: float) -> np.ndarray:
        lcx, lcy, lrx, lry = lung_fields[int(rng.integers(2))]
        while True:
            u, v = rng.uniform(-1, 1, size=2)
            if u * u + v * v <= 1:
                break
        return np.array([lcx + u * max(lrx - margin, 1.0), lcy + v * max(lry - margin, 1.0)])

    for _ in range(int(rng.integers(6, 11))):  # vessel markings
        p0 = lung_point(2.0)
        p1 = p0 + rng.uniform(-8, 8, size=2)
        img += np.clip(1.0 - _segment_distance(x, y, p0, p1), 0.0, 1.0) * lungs * rng.uniform(0.03, 0.07)
    for _ in range(int(rng.integers(0, 3))):  # linear scar-like opacities: same contrast as a nodule
        p0 = lung_point(6.0)
        angle = rng.uniform(0, 1)
        direction = np.array([1.0 - angle, angle]) * rng.choice([-1.0, 1.0], size=2)
        p1 = p0 + direction / np.sqrt(direction @ direction) * rng.uniform(12, 20)
        img += np.clip(1.8 - _segment_distance(x, y, p0, p1), 0.0, 1.0) * lungs * rng.uniform(0.14, 0.26)

    radius = rng.uniform(5.5, 8.5)
    center = lung_point(radius)
    contrast = rng.uniform(0.24, 0.34)
    elongation = 1.0 if positive else rng.uniform(2.5, 3.5)
    a, b = rng.uniform(-1.0, 1.0, size=2) + np.array([1e-3, 0.0])
    norm = np.sqrt(a * a + b * b)
    u = ((x - center[0]) * a + (y - center[1]) * b) / norm
    v = (-(x - center[0]) * b + (y - center[1]) * a) / norm
    finding = _soft_ellipse((u, v), (0.0, 0.0), (radius * elongation, radius / elongation), edge=1.5)
    img += finding * lungs * contrast

    img += rng.normal(0.0, rng.uniform(0.015, 0.03), size=shape)
    return img


def radiograph_dataset(
    values: np.ndarray,
    *,
    patient: str,
    uid_prefix: str,
    study_date: str,
    modality: str,
    monochrome1: bool,
    name_prefix: str,
    manufacturer: str,
    implementation_version: str,
) -> Any:
    """A chest radiograph (CR or DX) as a pydicom dataset with fixed file meta, ready to save.

    The demo and ``sample_data/generate.py`` write their radiographs with it; UIDs are derived from ``uid_prefix``
    and ``patient`` (:func:`derived_uid`), so the same arguments give the same bytes.

    Args:
        values: stored pixel values, uint16 (12 bits used), ``[row, column]``.
        patient: PatientID; the PatientName is ``{name_prefix}^{patient}``.
        uid_prefix: first part of every derived UID (study, series, instance).
        study_date: StudyDate, YYYYMMDD.
        modality: "DX" or "CR" (chooses the SOP class too).
        monochrome1: the values are stored inverted (air bright).
        name_prefix: family-name part of PatientName.
        manufacturer: Manufacturer.
        implementation_version: ImplementationVersionName of the file meta.
    """
    from pydicom.dataset import Dataset, FileMetaDataset

    sop_class = _DX_IMAGE_STORAGE if modality == "DX" else _CR_IMAGE_STORAGE
    sop_uid = derived_uid(uid_prefix, patient, "image")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = _EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = _IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = implementation_version
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"{name_prefix}^{patient}"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = derived_uid(uid_prefix, patient, "study")
    ds.SeriesInstanceUID = derived_uid(uid_prefix, patient, "series")
    ds.StudyDate = study_date
    ds.StudyTime = "090000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.SeriesNumber = 1
    ds.SeriesDescription = "CHEST PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = ["2.8", "2.8"]
    ds.PixelSpacing = ["2.8", "2.8"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PixelData = values.tobytes()
    return ds


def write_demo_xray(
    out: str | Path, n_patients: int, *, seed: int = DEMO_SEED, size: tuple[int, int] = (96, 128)
) -> Path:
    """Write ``n_patients`` synthetic radiographs (one DICOM file each, half of each class) and ``manifest.csv``.

    Args:
        out: folder to write into (created; files already there with the same names are overwritten).
        n_patients: number of patients (one image each), at least 4.
        seed: seed of every random draw; the same seed writes the same bytes.
        size: smallest and largest image side in pixels (even sizes in between are drawn per image).

    Returns:
        The path of ``manifest.csv`` (columns ``image,label``; the patient comes from the DICOM PatientID).
    """
    if n_patients < 4:
        raise ConfigError(f"demo data: n_patients={n_patients}; at least 4 are needed (two per class)")
    lo, hi = size
    if not 32 <= lo <= hi:
        raise ConfigError(
            f"demo data: image size range {tuple(size)!r}; give (smallest, largest) with 32 <= smallest <= largest"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 3])
    labels = [CLASSES[i % 2] for i in range(n_patients)]
    rng.shuffle(labels)
    rows = []
    for p, label in enumerate(labels):
        patient = f"DEMO-XR-{p + 1:05d}"
        shape = (int(rng.integers(lo // 2, hi // 2 + 1)) * 2, int(rng.integers(lo // 2, hi // 2 + 1)) * 2)
        att = xray_phantom(rng, shape, label == "positive")
        offset, gain = rng.uniform(150, 450), rng.uniform(1800, 2600)
        values = np.clip(np.rint(offset + gain * att), 0, 4095).astype(np.uint16)
        modality = "DX" if rng.integers(2) else "CR"
        monochrome1 = bool(rng.uniform() < 0.35)
        if monochrome1:  # stored inverted (air bright); readers must invert it back
            values = (4095 - values).astype(np.uint16)
        name = f"{patient}.dcm"
        ds = radiograph_dataset(
            values,
            patient=patient,
            uid_prefix="demo-xr",
            study_date=f"2025{p % 12 + 1:02d}{p % 27 + 1:02d}",
            modality=modality,
            monochrome1=monochrome1,
            name_prefix="Demo",
            manufacturer="medtl demo data",
            implementation_version=_IMPLEMENTATION_VERSION,
        )
        ds.save_as(out / name, enforce_file_format=True)
        rows.append({"image": name, "label": label})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def ensure_demo_data(
    out: str | Path, n_patients: int, *, seed: int = DEMO_SEED, size: tuple[int, int] = (96, 128)
) -> Path:
    """The demo's ``manifest.csv`` in ``out``: reused when an earlier call wrote it with the same settings.

    A stamp file records the settings and :data:`GENERATOR_VERSION`; any difference (or a missing stamp)
    rewrites the folder from scratch.

    Returns:
        The path of ``manifest.csv``.
    """
    out = Path(out)
    settings = {"version": GENERATOR_VERSION, "n_patients": n_patients, "seed": seed, "size": list(size)}
    stamp = out / _STAMP
    manifest = out / "manifest.csv"
    try:
        if manifest.is_file() and json.loads(stamp.read_text()) == settings:
            return manifest
    except (OSError, ValueError):
        pass
    if out.exists():
        shutil.rmtree(out)
    try:
        write_demo_xray(out, n_patients, seed=seed, size=size)
        stamp.write_text(json.dumps(settings))
    except OSError as exc:
        raise MedtlError(
            f"cannot write the demo data into {out}: {exc.strerror or exc}",
            path=str(out),
            fix="pass another comparison folder with --out",
        ) from exc
    return manifest
