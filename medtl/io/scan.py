"""Reading one scan (:func:`read_scan`), listing what a path holds (:func:`inspect_path`), and :func:`convert`."""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import MedtlError, NoImagesError, SeriesNotFoundError, UnknownOptionError
from medtl.io.dicom import (
    DicomHeader,
    DicomImage,
    _read_many,
    group_series,
    header_geometry,
    read_dicom_file,
    read_header,
    read_series,
    series_kind,
)
from medtl.io.geometry import LPS_TO_RAS, orientation_label
from medtl.io.nifti import is_nifti_path, nifti_header_info, read_nifti, write_nifti

__all__ = [
    "SeriesInfo",
    "Unreadable",
    "ScanIndex",
    "read_scan",
    "inspect_path",
    "select_series",
    "convert",
    "check_output_file",
    "list_files",
    "walk_files",
]

logger = logging.getLogger("medtl.io")

_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_SKIP_SUFFIXES = {".txt", ".csv", ".json", ".md", ".xml", ".html", ".py", ".yaml", ".yml", ".png", ".jpg", ".jpeg"}


@dataclass
class Unreadable:
    """A file that could not be read, and why."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class SeriesInfo:
    """One series (or one NIfTI file) found under a path, described from headers only."""

    uid: str
    modality: str
    description: str
    patient_id: str
    study_uid: str
    kind: str
    files: list[Path]
    n_slices: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    problems: list[str] = field(default_factory=list)
    channels: int = 1
    _headers: list[DicomHeader] = field(default_factory=list, repr=False, compare=False)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape)) * self.channels if self.shape else 0

    @property
    def stackable(self) -> bool:
        """False when the headers already show the series cannot be read as one image (mixed orientations...)."""
        blockers = ("different orientations", "without slice positions", "multi-frame files")
        return not any(b in p for p in self.problems for b in blockers)

    @property
    def label(self) -> str:
        return f"{self.uid}" + (f" ({self.description!r})" if self.description else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "description": self.description,
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "kind": self.kind,
            "n_files": len(self.files),
            "files": [str(f) for f in self.files],
            "n_slices": self.n_slices,
            "shape": list(self.shape),
            "spacing": [round(float(s), 6) for s in self.spacing],
            "orientation": self.orientation,
            "channels": self.channels,
            "problems": list(self.problems),
        }


@dataclass
class ScanIndex:
    """Everything :func:`inspect_path` found: image series and the files it could not read."""

    root: Path
    series: list[SeriesInfo]
    unreadable: list[Unreadable]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "series": [s.to_dict() for s in self.series],
            "unreadable": [u.to_dict() for u in self.unreadable],
        }


# --------------------------------------------------------------------------------------------- indexing


def _skipped(name: str) -> bool:
    if name.startswith(".") or name in _SKIP_NAMES:
        return True
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in _SKIP_SUFFIXES


def _stamp(st: os.stat_result) -> int:
    """When a file last changed, in ns: its mtime, or its ctime when later (a file replaced by a copy that kept
    the old mtime, e.g. ``cp -p`` or rsync, still gets a new ctime), so a cached header is never stale."""
    return max(st.st_mtime_ns, st.st_ctime_ns)


def walk_files(root: Path) -> tuple[list[tuple[Path, int, int]], list[Unreadable]]:
    """Regular files below ``root`` with their size and change stamp (:func:`_stamp`), and what cannot be read.

    Only regular files are returned, so that nothing ever opens a FIFO, a device or a socket (opening a FIFO
    blocks for ever). Those, broken links, empty files and folders that cannot be listed come back as
    :class:`Unreadable`. Hidden files and folders, obvious non-images (.txt, .csv, .json, ...) and links to
    folders are skipped. Files of a folder come before its sub-folders, each in name order.
    """
    files: list[tuple[Path, int, int]] = []
    bad: list[Unreadable] = []
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            bad.append(Unreadable(Path(folder), f"cannot list this folder ({exc.strerror or exc})"))
            continue
        subfolders = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                    continue
            except OSError:
                pass
            if _skipped(name):
                continue
            try:
                st = entry.stat()  # follows links: a link to a regular file is read as that file
            except OSError as exc:
                bad.append(Unreadable(Path(entry.path), f"cannot be read ({exc.strerror or exc}; a broken link?)"))
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # a link to a folder: not followed (it could loop)
            if not stat.S_ISREG(st.st_mode):
                bad.append(Unreadable(Path(entry.path), "not a regular file (a FIFO, device or socket); skipped"))
                continue
            if st.st_size == 0:
                bad.append(Unreadable(Path(entry.path), "empty file (0 bytes)"))
                continue
            files.append((Path(entry.path), st.st_size, _stamp(st)))
        stack.extend(reversed(subfolders))
    return files, bad


def list_files(root: Path) -> list[Path]:
    """All regular files below ``root`` (recursive, sorted), skipping hidden files and obvious non-images."""
    return [p for p, _, _ in walk_files(Path(root))[0]]


def _dicom_series_info(headers: list[DicomHeader]) -> SeriesInfo:
    h0 = headers[0]
    geo = header_geometry(headers)
    kind = geo.get("kind", series_kind(headers))
    affine_ras = LPS_TO_RAS @ geo["affine_lps"]
    return SeriesInfo(
        uid=h0.series_uid,
        modality=h0.modality,
        description=h0.description,
        patient_id=h0.patient_id,
        study_uid=h0.study_uid,
        kind=kind,
        files=sorted(h.path for h in headers),
        n_slices=int(geo["n_slices"]),
        shape=tuple(int(s) for s in geo["shape"]),
        spacing=tuple(float(s) for s in geo["spacing"]),
        orientation=orientation_label(affine_ras, 2 if len(geo["shape"]) == 2 else 3),
        problems=list(geo["problems"]),
        channels=int(geo.get("channels", 1)),
        _headers=headers,
    )


def _nifti_series_info(path: Path) -> SeriesInfo:
    info = nifti_header_info(path)
    shape = info["shape"]
    return SeriesInfo(
        uid=str(path),
        modality="",
        description=path.name,
        patient_id="",
        study_uid="",
        kind="nifti",
        files=[path],
        n_slices=int(shape[2]) if len(shape) > 2 else 1,
        shape=tuple(shape),
        spacing=info["spacing"],
        orientation=orientation_label(info["affine"]),
    )


def _read_headers(files: list[tuple[Path, int, int]], root: Path | None) -> list[DicomHeader | str]:
    """Headers (or reasons) of ``files``: from the on-disk cache where size and mtime match, else read."""
    from medtl.io.index_cache import open_header_cache

    cache = open_header_cache() if len(files) > 1 else None
    found = cache.lookup(files, root) if cache is not None else {}
    missing = [f for f in files if os.fspath(f[0]) not in found]
    if missing:
        results = _read_many([p for p, _, _ in missing], sizes=[size for _, size, _ in missing])
        if cache is not None:
            # a reason from the operating system (permissions, a vanished file) may change: not cached
            keep = [(f[0], f[1], f[2], r) for f, r in zip(missing, results, strict=True) if not _transient(r)]
            cache.store(keep)
        found.update(zip((os.fspath(p) for p, _, _ in missing), results, strict=True))
    if cache is not None:
        cache.close()
    return [found[os.fspath(p)] for p, _, _ in files]


def _transient(result: DicomHeader | str) -> bool:
    return isinstance(result, str) and result.startswith("cannot open")


def _series_or_problems(headers: list[DicomHeader]) -> SeriesInfo | list[Unreadable]:
    try:
        return _dicom_series_info(headers)
    except Exception as exc:  # noqa: BLE001 - one series with hostile geometry must not end the whole index
        reason = str(exc) if isinstance(exc, MedtlError) else f"{type(exc).__name__}: {exc}"
        where = headers[0].series_uid or "without a SeriesInstanceUID"
        return [Unreadable(h.path, f"series {where} cannot be described: {reason}") for h in headers]


def _index(path: Path) -> ScanIndex:
    from medtl.utils import patient_id_secret

    if not path.exists():
        raise NoImagesError(f"{path} does not exist", path=str(path), fix="check the path")
    patient_id_secret()  # a missing or unreadable secret is one error here, not one per file
    unreadable: list[Unreadable] = []
    if path.is_dir():
        files, unreadable = walk_files(path)
        root: Path | None = path.resolve() if path.is_absolute() else None
    else:
        st = path.stat()
        files = []
        if not stat.S_ISREG(st.st_mode):
            unreadable.append(Unreadable(path, "not a regular file (a FIFO, device or socket)"))
        elif st.st_size == 0:
            unreadable.append(Unreadable(path, "empty file (0 bytes)"))
        else:
            files = [(path, st.st_size, _stamp(st))]
        root = None
    nifti = [p for p, _, _ in files if is_nifti_path(p)]
    others = [f for f in files if not is_nifti_path(f[0])]
    images: list[DicomHeader] = []
    for (p, _, _), h in zip(others, _read_headers(others, root), strict=True):
        if isinstance(h, str):
            unreadable.append(Unreadable(p, h))
        elif h.is_dicomdir and path.is_file():
            unreadable.append(
                Unreadable(h.path, f"a DICOMDIR (an index of other files); pass its folder {h.path.parent}")
            )
        elif h.is_dicomdir:
            logger.debug("%s: DICOMDIR skipped (the files it lists are indexed directly)", h.path)
        elif not h.has_pixels:
            unreadable.append(Unreadable(h.path, f"no pixel data ({h.sop_class_name or h.modality or 'no SOP class'})"))
        elif h.rows <= 0 or h.cols <= 0:
            unreadable.append(Unreadable(h.path, "Rows/Columns missing or zero"))
        else:
            images.append(h)
    series: list[SeriesInfo] = []
    for hs in group_series(images).values():
        info = _series_or_problems(hs)
        if isinstance(info, SeriesInfo):
            series.append(info)
        else:
            unreadable.extend(info)
    for p in nifti:
        try:
            series.append(_nifti_series_info(p))
        except MedtlError as exc:
            unreadable.append(Unreadable(p, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one hostile NIfTI header is one bad file
            unreadable.append(Unreadable(p, f"cannot read the NIfTI header ({type(exc).__name__}: {exc})"))
    return ScanIndex(root=path, series=series, unreadable=sorted(unreadable, key=lambda u: str(u.path)))


def inspect_path(path: str | os.PathLike[str]) -> ScanIndex:
    """List the series under a DICOM file, DICOM folder (recursively, a whole tree) or NIfTI file.

    Only headers are read. Files that are not images, or cannot be read, are listed in ``unreadable``
    with the reason.
    """
    return _index(Path(path))


# --------------------------------------------------------------------------------------------- selection


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


# --------------------------------------------------------------------------------------------- reading


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


def _from_dicom(img: DicomImage, path: Path, wrap: Any = None) -> Any:
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
    return (wrap or _metatensor)(img.array, affine_ras, meta)


def _read_nifti_scan(path: Path, volume: int | None, wrap: Any = None) -> Any:
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
    return (wrap or _metatensor)(img.array, img.affine, meta)


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
    return _read(Path(path), series, volume, allow_irregular, _metatensor)


def _read(path: Path, series: str | None, volume: int | None, allow_irregular: bool, wrap: Any) -> Any:
    """:func:`read_scan` with ``wrap(array, affine_ras, meta)`` making the result (a MetaTensor, or plain arrays)."""
    path = Path(path)
    if not path.exists():
        raise NoImagesError(f"{path} does not exist", path=str(path), fix="check the path")
    if path.is_file():
        if is_nifti_path(path):
            return _read_nifti_scan(path, volume, wrap)
        header = read_header(path)
        if series is not None and str(series).strip() and series not in (header.series_uid, header.description):
            raise SeriesNotFoundError(
                f"{path} belongs to series {header.series_uid} ({header.description!r}), not {series!r}",
                path=str(path),
                fix="pass the file's folder to choose among several series, or leave series unset",
            )
        return _from_dicom(read_dicom_file(header, allow_irregular=allow_irregular), path, wrap)
    chosen = select_series(path, series)
    if chosen.kind == "nifti":
        return _read_nifti_scan(chosen.files[0], volume, wrap)
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
        return _from_dicom(read_dicom_file(biggest, allow_irregular=allow_irregular), path, wrap)
    return _from_dicom(read_series(headers, where=str(path), allow_irregular=allow_irregular), path, wrap)


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
    if not path.exists():
        raise NoImagesError(f"{path} does not exist", path=str(path), fix="check the path")
    index = _index(path)
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


def check_output_file(out: str | os.PathLike[str], example: str) -> Path:
    """``out`` as a path a file can be written to: not a folder, below a folder (or where one can be made).

    Raises:
        UnknownOptionError: ``out`` is a folder, or one of its parents is a file.
    """
    out = Path(out).expanduser()
    if out.is_dir():
        raise UnknownOptionError(
            f"output {out} is a folder, not a file", path=str(out), fix=f"pass a file name, e.g. {out / example}"
        )
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UnknownOptionError(
            f"output {out} cannot be written: {parent} is a file, not a folder",
            path=str(out),
            fix="choose an output path below a folder",
        )
    return out


def write_failed(out: Path, exc: OSError) -> MedtlError:
    """The one-line error for an output that could not be written (a temporary file left behind is removed)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-{os.getpid()}*"):
        try:
            tmp.unlink()
        except OSError:
            pass
    return MedtlError(
        f"cannot write {out} ({exc.strerror or exc})",
        path=str(out),
        fix="check that the folder exists, is writable and has free space",
    )


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    series: str | None = None,
    *,
    allow_irregular: bool = False,
) -> Path:
    """Write one series (read with :func:`read_scan`) as NIfTI with its RAS affine; returns the written path."""
    out = Path(out)
    if not is_nifti_path(out):
        raise UnknownOptionError(
            f"output {out} must end in .nii or .nii.gz", path=str(out), fix="name the output e.g. scan.nii.gz"
        )
    out = check_output_file(out, "scan.nii.gz")
    # plain arrays: writing a NIfTI needs neither torch nor MONAI, whose import dwarfs a small conversion
    array, affine_ras = _read(Path(path), series, None, allow_irregular, lambda a, aff, meta: (a, aff))
    try:
        return write_nifti(np.asarray(array, dtype=np.float32), np.asarray(affine_ras, dtype=np.float64), out)
    except OSError as exc:
        raise write_failed(out, exc) from None
