"""Reading one scan: :func:`read_scan` (a MONAI ``MetaTensor``), :func:`read_scan_arrays` (plain arrays) and
:func:`select_series`, which picks the series a folder's read returns."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import NoImagesError, SeriesNotFoundError
from medtl.io.dicom import DicomImage, read_dicom_file, read_header, read_series
from medtl.io.geometry import LPS_TO_RAS
from medtl.io.nifti import is_nifti_path, read_nifti
from medtl.io.scan_index import SeriesInfo, inspect_path

__all__ = ["read_scan", "read_scan_arrays", "select_series"]

logger = logging.getLogger("medtl.io")


def _available(series: Sequence[SeriesInfo], limit: int = 12) -> str:
    items = [f"{s.label} [{s.modality or s.kind}, {s.n_slices} slice(s)]" for s in series[:limit]]
    if len(series) > limit:
        items.append(f"and {len(series) - limit} more")
    return "; ".join(items)


def _select(series: list[SeriesInfo], wanted: str | None, where: Path) -> SeriesInfo:
    if wanted is None or (isinstance(wanted, float) and math.isnan(wanted)) or str(wanted).strip() == "":
        patients = {s.patient_id for s in series if s.patient_id}
        if len(patients) > 1:
            # choosing the largest would take one patient's pixels under whichever patient a caller guessed
            raise SeriesNotFoundError(
                f"{where} holds series of {len(patients)} different patients, so which one to read must be "
                f"chosen: {_available(series)}",
                path=str(where),
                fix="name one series (SeriesInstanceUID or SeriesDescription) in the manifest's series column "
                "(read_scan: series=...; convert: --series), or give each patient's series its own folder",
            )
        # the largest series, preferring those that can be read as one image (not a set of localizers)
        ranked = sorted(series, key=lambda s: (s.stackable, s.n_voxels, s.n_slices), reverse=True)
        chosen = ranked[0]
        if len(ranked) > 1:
            logger.info(
                "%s: chose series %s (%d slice(s), the largest); skipped %s; pass series=UID_OR_DESCRIPTION to choose",
                where,
                chosen.label,
                chosen.n_slices,
                ", ".join(f"{s.label} ({s.n_slices} slice(s))" for s in ranked[1:]),
            )
        else:
            logger.info("%s: series %s (%d slice(s))", where, chosen.label, chosen.n_slices)
        return chosen
    key = str(wanted).strip()
    matches = [s for s in series if s.uid == key]
    if not matches:
        matches = [s for s in series if s.description.strip().lower() == key.lower()]
    if not matches:
        matches = [s for s in series if s.kind == "nifti" and (s.files[0].name == key or str(s.files[0]).endswith(key))]
    if not matches:
        raise SeriesNotFoundError(
            f"no series {key!r} in {where}; available: {_available(series)}",
            path=str(where),
            fix="pass one of the SeriesInstanceUIDs or SeriesDescriptions listed (see `medtl inspect PATH`)",
        )
    if len(matches) > 1:
        raise SeriesNotFoundError(
            f"{len(matches)} series in {where} have the description {key!r}: {_available(matches)}",
            path=str(where),
            fix="pass the SeriesInstanceUID of the one you want",
        )
    others = [s for s in series if s is not matches[0]]
    logger.info("%s: chose series %s%s", where, matches[0].label, f"; skipped {_available(others)}" if others else "")
    return matches[0]


def _metatensor(array: np.ndarray, affine_ras: np.ndarray, meta: dict[str, Any]) -> Any:
    import torch
    from monai.data import MetaTensor

    affine = torch.as_tensor(np.asarray(affine_ras, dtype=np.float64), dtype=torch.float64)
    spatial = tuple(int(s) for s in array.shape[1:])
    meta = {
        **meta,
        "affine": affine,
        "original_affine": np.asarray(affine_ras, dtype=np.float64).copy(),
        "spatial_shape": spatial,
        "space": "RAS",
        "original_channel_dim": 0,
    }
    tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
    return MetaTensor(tensor, meta=meta)


def _from_dicom(img: DicomImage, path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    h = img.header
    affine_ras = LPS_TO_RAS @ img.affine_lps
    meta: dict[str, Any] = {
        "filename_or_obj": str(path),
        "spacing": tuple(float(s) for s in img.spacing),
        "modality": h.modality,
        "units": h.units,
        "series_uid": h.series_uid,
        "study_uid": h.study_uid,
        "series_description": h.description,
        "patient_id": h.patient_id,
        "source_format": "dicom",
        "kind": img.kind,
        "n_slices": img.n_slices,
        "sop_class": h.sop_class_name,
    }
    if img.array.ndim == 3:
        meta["photometric"] = img.photometric
    return img.array, affine_ras, meta


def _read_nifti_scan(path: Path, volume: int | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    img = read_nifti(path, volume=volume)
    meta = {
        "filename_or_obj": str(path),
        "spacing": img.spacing,
        "modality": "",
        "units": "",
        "series_uid": "",
        "study_uid": "",
        "series_description": path.name,
        "patient_id": "",
        "source_format": "nifti",
        "kind": "nifti",
        "n_slices": int(img.array.shape[3]),
        "n_volumes": img.n_volumes,
    }
    return img.array, img.affine, meta


def read_scan(
    path: str | os.PathLike[str],
    series: str | None = None,
    *,
    volume: int | None = None,
    allow_irregular: bool = False,
) -> Any:
    """Read one scan as a channel-first MONAI ``MetaTensor`` in physical units with its RAS affine.

    Args:
        path: a DICOM file, a DICOM folder (searched recursively, any file names) or a .nii/.nii.gz file.
        series: SeriesInstanceUID or SeriesDescription to read from a folder holding several series;
            by default the largest image series is read (the choice is logged).
        volume: index of the volume of a 4D NIfTI file; by default all volumes become channels.
        allow_irregular: resample slices with gaps, uneven spacing or duplicates onto a regular grid
            (with a warning) instead of raising :class:`~medtl.errors.GeometryError`.

    Returns:
        ``MetaTensor`` shaped (C, X, Y, Z) for volumes and multi-frame objects, (C, X, Y) for 2D images;
        float32, CT in Hounsfield units. ``meta`` holds affine (RAS), spacing, modality, units, series and
        study UIDs, series description, hashed patient ID and source format.

    Raises:
        NoImagesError: the path does not exist or holds no readable image.
        SeriesNotFoundError: ``series`` matches no series (the message lists them).
        GeometryError: slices are duplicated, missing or unevenly spaced.
        NotDicomError, TruncatedFileError, MissingPixelDataError, InvalidHeaderError, UnsupportedScanError:
            a bad file (with its path and the fix).
    """
    return _metatensor(*read_scan_arrays(path, series, volume=volume, allow_irregular=allow_irregular))


def read_scan_arrays(
    path: str | os.PathLike[str],
    series: str | None = None,
    *,
    volume: int | None = None,
    allow_irregular: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`read_scan` without torch or MONAI: the channel-first float32 array, its RAS affine and the meta dict.

    Takes the arguments of :func:`read_scan` and raises its errors.
    """
    path = Path(path)
    if not path.exists():
        raise NoImagesError(f"{path} does not exist", path=str(path), fix="check the path")
    if path.is_file():
        if is_nifti_path(path):
            return _read_nifti_scan(path, volume)
        header = read_header(path)
        if series is not None and str(series).strip() and series not in (header.series_uid, header.description):
            raise SeriesNotFoundError(
                f"{path} belongs to series {header.series_uid} ({header.description!r}), not {series!r}",
                path=str(path),
                fix="pass the file's folder to choose among several series, or leave series unset",
            )
        return _from_dicom(read_dicom_file(header, allow_irregular=allow_irregular), path)
    chosen = select_series(path, series)
    if chosen.kind == "nifti":
        return _read_nifti_scan(chosen.files[0], volume)
    headers = chosen._headers
    if len(headers) > 1 and any(h.n_frames > 1 for h in headers):
        biggest = max(headers, key=lambda h: h.n_frames * h.rows * h.cols)
        logger.warning(
            "%s: series %s holds %d multi-frame files; reading the largest, %s",
            path,
            chosen.label,
            len(headers),
            biggest.path,
        )
        return _from_dicom(read_dicom_file(biggest, allow_irregular=allow_irregular), path)
    return _from_dicom(read_series(headers, where=str(path), allow_irregular=allow_irregular), path)


def select_series(path: str | os.PathLike[str], series: str | None = None) -> SeriesInfo:
    """The series :func:`read_scan` reads from a folder, from headers only (its patient, modality, files...).

    Args:
        path: a DICOM folder (searched recursively) or file.
        series: SeriesInstanceUID or SeriesDescription; by default the largest series, which is allowed only
            when every series in the folder belongs to one patient.

    Raises:
        NoImagesError: nothing readable under ``path``.
        SeriesNotFoundError: ``series`` matches no series, or the folder holds several patients and no
            ``series`` was given (the message lists the series to choose from).
    """
    path = Path(path)
    index = inspect_path(path)  # raises NoImagesError when the path does not exist
    if not index.series:
        reasons = "; ".join(f"{u.path.name}: {u.reason}" for u in index.unreadable[:3])
        raise NoImagesError(
            f"no readable image in {path}"
            + (f" ({len(index.unreadable)} file(s) unreadable: {reasons})" if index.unreadable else " (empty folder)"),
            path=str(path),
            fix="pass a folder holding DICOM images or NIfTI files (see `medtl inspect PATH`)",
        )
    if path.is_file():
        chosen = index.series[0]
        if series is not None and str(series).strip() and str(series).strip() not in (chosen.uid, chosen.description):
            raise SeriesNotFoundError(
                f"{path} belongs to series {chosen.uid} ({chosen.description!r}), not {series!r}",
                path=str(path),
                fix="pass the file's folder to choose among several series, or leave series unset",
            )
        return chosen
    return _select(index.series, series, path)
