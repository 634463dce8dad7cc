"""Listing what a path holds, from headers only: :func:`inspect_path` and its :class:`ScanIndex`.

A folder is walked for regular files (never opening a FIFO, device or socket); DICOM headers come from the
on-disk cache (:mod:`medtl.io.index_cache`) where a file has not changed, else from the files; headers are
grouped by series and each series is described (shape, spacing, orientation, problems) without decoding a
pixel. NIfTI files are described from their headers. Whatever cannot be read is listed with the reason.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import MedtlError, NoImagesError
from medtl.io.dicom import DicomHeader, group_series, header_geometry, read_headers, series_kind
from medtl.io.geometry import LPS_TO_RAS, orientation_label
from medtl.io.index_cache import open_header_cache
from medtl.io.nifti import is_nifti_path, nifti_header_info
from medtl.utils import patient_id_secret

__all__ = ["SeriesInfo", "Unreadable", "ScanIndex", "inspect_path", "walk_files"]

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
    cache = open_header_cache() if len(files) > 1 else None
    found = cache.lookup(files, root) if cache is not None else {}
    missing = [f for f in files if os.fspath(f[0]) not in found]
    if missing:
        if cache is not None:
            cache.close()  # no open SQLite connection across the fork of header helpers; store() opens it again
        results = read_headers([p for p, _, _ in missing], sizes=[size for _, size, _ in missing])
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


def inspect_path(path: str | os.PathLike[str]) -> ScanIndex:
    """List the series under a DICOM file, DICOM folder (recursively, a whole tree) or NIfTI file.

    Only headers are read. Files that are not images, or cannot be read, are listed in ``unreadable``
    with the reason.

    Raises:
        NoImagesError: ``path`` does not exist.
    """
    path = Path(path)
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
    nifti: list[Path] = []
    others: list[tuple[Path, int, int]] = []
    for f in files:
        if is_nifti_path(f[0]):
            nifti.append(f[0])
        else:
            others.append(f)
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
