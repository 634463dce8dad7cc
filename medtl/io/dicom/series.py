"""DICOM series: grouping headers by series, checking and sorting slices, and assembling the image.

Slices are grouped by SeriesInstanceUID and never mixed; a series is sorted by the projection of
ImagePositionPatient on the slice normal and checked for duplicated positions, gaps and uneven spacing before
any pixel is decoded (:mod:`medtl.io.geometry`). Multi-frame objects take their frame positions from the
per-frame functional groups or the grid frame offsets of an RT dose. :func:`header_geometry` describes a
series from its headers alone, for ``medtl inspect``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import GeometryError, MissingPixelDataError, UnsupportedScanError
from medtl.io.dicom.header import DicomHeader
from medtl.io.dicom.pixels import check_claimed_size, decode_frames, dims_text, physical_into, to_physical
from medtl.io.geometry import SpacingReport, affine_lps, check_spacing, resample_slices, slice_normal
from medtl.io.memory import ensure_memory

__all__ = [
    "DicomImage",
    "group_series",
    "series_kind",
    "read_series",
    "read_dicom_file",
    "header_geometry",
    "io_workers",
]

logger = logging.getLogger("medtl.io")

_ORIENTATION_TOL = 1e-4


def io_workers() -> int:
    """Threads used to scan headers and decode slices (``MEDTL_IO_WORKERS``, else the CPU count, at most 8)."""
    env = os.environ.get("MEDTL_IO_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class DicomImage:
    """Decoded pixels and geometry, before they become a MetaTensor.

    ``array`` is channel-first with spatial axes (i, j[, k]): i along columns, j along rows.
    """

    array: np.ndarray
    affine_lps: np.ndarray
    spacing: tuple[float, ...]
    header: DicomHeader
    kind: str
    photometric: str
    n_slices: int
    files: list[Path]


def group_series(headers: Iterable[DicomHeader]) -> dict[str, list[DicomHeader]]:
    """Group image headers by SeriesInstanceUID (a file without a UID is its own series)."""
    groups: dict[str, list[DicomHeader]] = {}
    for h in headers:
        key = h.series_uid or f"no-series-uid:{h.path}"
        groups.setdefault(key, []).append(h)
    return groups


def series_kind(headers: Sequence[DicomHeader]) -> str:
    """``"volume"`` (several single-frame slices), ``"image"`` (one 2D image) or ``"multiframe"``."""
    if len(headers) == 1:
        return "multiframe" if headers[0].n_frames > 1 else "image"
    if all(h.n_frames == 1 for h in headers):
        return "volume"
    return "multiframe"


def _check_iop(iop: Sequence[float] | None, what: str, where: str) -> None:
    """ImageOrientationPatient must be two perpendicular unit vectors; anything else gives a degenerate affine."""
    if iop is None:
        return
    row, col = np.asarray(iop[:3], dtype=np.float64), np.asarray(iop[3:6], dtype=np.float64)
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05 or abs(float(row @ col)) > 0.05:
        raise GeometryError(
            f"{what} in {where}: ImageOrientationPatient {tuple(round(float(v), 4) for v in iop)} is not two "
            "perpendicular unit vectors (the orientation is degenerate)",
            path=where,
            fix="the header is corrupt; export the series again from the source system",
        )


def _series_name(h: DicomHeader) -> str:
    return f"series {h.series_uid}" + (f" ({h.description!r})" if h.description else "")


def _geometry_error(h: DicomHeader, where: str, report: SpacingReport, labels: Sequence[str]) -> GeometryError:
    actions = []
    if report.gaps:
        actions.append("add the missing slices")
    if report.duplicates:
        actions.append("remove the duplicated files (or split acquisitions into their own folders)")
    if report.spacing > 0:
        actions.append(
            "pass allow_irregular=True (CLI: --allow-irregular) to resample onto a regular "
            f"{report.spacing:.3f} mm grid"
        )
    return GeometryError(
        f"{_series_name(h)} in {where}: slices do not form a regular grid: " + "; ".join(report.describe(labels)),
        path=where,
        fix=", or ".join(actions) if actions else "pass the files of one stack only",
    )


def _check_same(values: Sequence[Any], what: str, h: DicomHeader, where: str, labels: Sequence[str]) -> None:
    first = values[0]
    for v, lab in zip(values, labels, strict=True):
        if first is None or v is None:
            same = first is v
        else:
            same = np.allclose(np.asarray(v, float), np.asarray(first, float), atol=_ORIENTATION_TOL)
        if not same:
            raise GeometryError(
                f"{_series_name(h)} in {where} mixes {what}: {labels[0]} has {first}, {lab} has {v}",
                path=where,
                fix="a series must be one stack; pass the files of one stack as their own folder",
            )


def _assemble(
    h0: DicomHeader,
    where: str,
    labels: list[str],
    ipps: np.ndarray,
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    load: Callable[[list[int], np.ndarray], None],
    allow_irregular: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Sort slices along the normal, check spacing, load pixels in sorted order.

    ``load(order, out)`` fills ``out[k]`` with slice ``order[k]`` in physical units.

    Returns:
        Array (Z, Y, X) i.e. (k, j, i), the LPS affine and the spacing (i, j, k).
    """
    normal = slice_normal(iop)
    report = check_spacing(ipps, normal)
    sorted_labels = [labels[o] for o in report.order]
    order = list(report.order)
    d = report.distances
    if not report.regular:
        problems = report.describe(sorted_labels)
        if not allow_irregular or report.spacing <= 0:
            raise _geometry_error(h0, where, report, sorted_labels)
        logger.warning(
            "%s in %s: resampling onto a regular %.3f mm grid because %s",
            _series_name(h0),
            where,
            report.spacing,
            "; ".join(problems),
        )
    keep = [0] + [k for k in range(1, len(order)) if d[k] - d[k - 1] >= 1e-3]
    if len(keep) < len(order):
        logger.warning("%s: dropped %d slice(s) at duplicated positions", _series_name(h0), len(order) - len(keep))
    order_kept = [order[k] for k in keep]
    dist = d[keep]
    stack = np.empty((len(order_kept), h0.rows, h0.cols), dtype=np.float32)
    load(order_kept, stack)
    first = ipps[order_kept[0]]
    n = len(order_kept)
    if n > 1:
        direction = (ipps[order_kept[-1]] - first) / (dist[-1] - dist[0])
        spacing_k = report.spacing if not report.regular else (dist[-1] - dist[0]) / (n - 1)
        if not report.regular:
            stack, _ = resample_slices(stack, dist, spacing_k)
        step = direction * spacing_k
    else:
        spacing_k = float(h0.slice_thickness or 1.0)
        step = normal * spacing_k
    affine = affine_lps(iop, first, pixel_spacing, step)
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), float(np.linalg.norm(step)))
    return stack, affine, spacing


def _map(fn: Callable[[int], None], n: int) -> None:
    workers = io_workers()
    if n < 4 or workers == 1:
        for i in range(n):
            fn(i)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, range(n)):
            pass


def read_series(headers: Sequence[DicomHeader], *, where: str = "", allow_irregular: bool = False) -> DicomImage:
    """Read one series of single-frame slices into a volume (or a 2D image when it has one slice)."""
    if len(headers) == 1:
        return read_dicom_file(headers[0], allow_irregular=allow_irregular)
    h0 = headers[0]
    where = where or str(h0.path.parent)
    labels = [h.path.name for h in headers]
    if any(h.ipp is None or h.iop is None for h in headers):
        raise UnsupportedScanError(
            f"{_series_name(h0)} in {where} holds {len(headers)} 2D images without slice positions "
            "(ImagePositionPatient/ImageOrientationPatient), so they cannot be stacked into a volume",
            path=where,
            fix="read one of its files with read_scan(FILE)",
        )
    _check_same([(h.rows, h.cols) for h in headers], "image sizes", h0, where, labels)
    _check_same([h.iop for h in headers], "orientations", h0, where, labels)
    _check_iop(h0.iop, _series_name(h0), where)
    for h in headers:  # every slice's claim is checked before the volume is allocated
        check_claimed_size(h)
    ensure_memory(len(headers) * h0.rows * h0.cols * 4, f"{len(headers)} slices of {dims_text(h0)}", where)
    _check_same([h.pixel_spacing for h in headers], "pixel spacings", h0, where, labels)
    if any(h.samples != 1 for h in headers):
        raise UnsupportedScanError(
            f"{_series_name(h0)} in {where} is a stack of colour images",
            path=where,
            fix="read one of its files with read_scan(FILE)",
        )
    ipps = np.array([h.ipp for h in headers], dtype=np.float64)
    spacing_2d = h0.pixel_spacing or (1.0, 1.0)

    def load(order: list[int], out: np.ndarray) -> None:
        def one(k: int) -> None:
            h = headers[order[k]]
            raw, photometric = decode_frames(h)
            physical_into(out[k], raw[0], h, photometric, h.slope, h.intercept)

        _map(one, len(order))

    stack, affine, spacing = _assemble(h0, where, labels, ipps, h0.iop, spacing_2d, load, allow_irregular)  # type: ignore[arg-type]
    return DicomImage(
        array=stack.transpose(2, 1, 0)[None],
        affine_lps=affine,
        spacing=spacing,
        header=h0,
        kind="volume",
        photometric=h0.photometric,
        n_slices=stack.shape[0],
        files=sorted(h.path for h in headers),
    )


def _flat_affine(h: DicomHeader, spacing_2d: Sequence[float], step: float) -> np.ndarray:
    _check_iop(h.iop, _series_name(h), str(h.path))
    iop = h.iop or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    ipp = h.ipp or (0.0, 0.0, 0.0)
    return affine_lps(iop, ipp, spacing_2d, slice_normal(iop) * step)


def read_dicom_file(h: DicomHeader, *, allow_irregular: bool = False) -> DicomImage:
    """Read one file: a 2D image (C, X, Y), or a multi-frame object as (C, X, Y, frames)."""
    if h.is_dicomdir:
        raise MissingPixelDataError(
            f"{h.path} is a DICOMDIR (an index of other files), not an image",
            path=str(h.path),
            fix=f"pass its folder instead: {h.path.parent}",
        )
    raw, photometric = decode_frames(h)
    spacing_2d = h.pixel_spacing or (1.0, 1.0)
    if h.n_frames == 1 or raw.shape[0] == 1:
        frame = raw[0]
        phys = to_physical(frame, h, photometric, h.slope, h.intercept)
        arr = phys.transpose(2, 1, 0) if phys.ndim == 3 else phys.T[None]
        return DicomImage(
            array=arr,
            affine_lps=_flat_affine(h, spacing_2d, float(h.slice_thickness or 1.0)),
            spacing=(float(spacing_2d[1]), float(spacing_2d[0])),
            header=h,
            kind="image",
            photometric="RGB" if phys.ndim == 3 else ("MONOCHROME2" if photometric == "MONOCHROME1" else photometric),
            n_slices=1,
            files=[h.path],
        )
    where = str(h.path)
    n = raw.shape[0]
    labels = [f"frame {f}" for f in range(n)]
    geometry = _multiframe_geometry(h, n)
    if geometry is not None and raw.ndim == 3:
        ipps, iop, ps, slopes, intercepts = geometry

        def load(order: list[int], out: np.ndarray) -> None:
            for k, f in enumerate(order):
                physical_into(out[k], raw[f], h, photometric, slopes[f], intercepts[f])

        stack, affine, spacing = _assemble(h, where, labels, ipps, iop, ps, load, allow_irregular)
        return DicomImage(
            array=stack.transpose(2, 1, 0)[None],
            affine_lps=affine,
            spacing=spacing,
            header=h,
            kind="multiframe",
            photometric=photometric,
            n_slices=stack.shape[0],
            files=[h.path],
        )
    # frames without geometry (cine, ultrasound, secondary capture): stacked in acquisition order
    phys = to_physical(raw, h, photometric, h.slope, h.intercept)
    arr = phys.transpose(3, 2, 1, 0) if phys.ndim == 4 else phys.transpose(2, 1, 0)[None]
    return DicomImage(
        array=arr,
        affine_lps=_flat_affine(h, spacing_2d, 1.0),
        spacing=(float(spacing_2d[1]), float(spacing_2d[0]), 1.0),
        header=h,
        kind="multiframe",
        photometric="RGB" if phys.ndim == 4 else photometric,
        n_slices=n,
        files=[h.path],
    )


def _multiframe_geometry(
    h: DicomHeader, n: int
) -> tuple[np.ndarray, tuple[float, ...], tuple[float, float], list[float], list[float]] | None:
    """Per-frame positions, orientation, spacing and rescale of an enhanced object or RT dose; None if absent."""
    if h.frames and len(h.frames) == n and all(f.ipp is not None for f in h.frames):
        iops = [f.iop or h.iop for f in h.frames]
        if any(o is None for o in iops):
            return None
        labels = [f"frame {f}" for f in range(n)]
        _check_same(iops, "orientations", h, str(h.path), labels)
        ps = h.frames[0].pixel_spacing or h.pixel_spacing or (1.0, 1.0)
        ipps = np.array([f.ipp for f in h.frames], dtype=np.float64)
        slopes = [f.slope if f.slope != 1.0 or f.intercept != 0.0 else h.slope for f in h.frames]
        intercepts = [f.intercept if f.slope != 1.0 or f.intercept != 0.0 else h.intercept for f in h.frames]
        return ipps, iops[0], ps, slopes, intercepts  # type: ignore[return-value]
    if h.grid_offsets and len(h.grid_offsets) == n and h.ipp is not None and h.iop is not None:
        normal = slice_normal(h.iop)
        offsets = np.asarray(h.grid_offsets, dtype=np.float64)
        # Offsets are relative to ImagePositionPatient when the first is 0, else absolute; either way frame 0
        # lies at ImagePositionPatient.
        ipps = np.asarray(h.ipp, dtype=np.float64)[None] + (offsets - offsets[0])[:, None] * normal[None]
        ps = h.pixel_spacing or (1.0, 1.0)
        return ipps, h.iop, ps, [h.slope] * n, [h.intercept] * n
    return None


def header_geometry(headers: Sequence[DicomHeader]) -> dict[str, Any]:
    """Shape, spacing, affine and problems of a series from its headers alone (for inspection)."""
    h0 = headers[0]
    ps = h0.pixel_spacing or (1.0, 1.0)
    kind = series_kind(headers)
    info: dict[str, Any] = {"problems": []}
    distinct_iops = {h.iop for h in headers if h.iop is not None}
    for iop in distinct_iops:
        _check_iop(iop, _series_name(h0), str(h0.path.parent))
    if kind == "volume" and all(h.ipp is not None and h.iop is not None for h in headers):
        ipps = np.array([h.ipp for h in headers], dtype=np.float64)
        report = check_spacing(ipps, slice_normal(h0.iop))  # type: ignore[arg-type]
        labels = [headers[o].path.name for o in report.order]
        info["problems"] = report.describe(labels)
        orientations = {tuple(round(v, 4) for v in iop) for iop in distinct_iops}
        if len(orientations) > 1:
            info["problems"].append(f"{len(orientations)} different orientations")
        first = ipps[report.order[0]]
        step = slice_normal(h0.iop) * (report.spacing or 1.0)  # type: ignore[arg-type]
        info["shape"] = (h0.cols, h0.rows, len(headers))
        info["spacing"] = (float(ps[1]), float(ps[0]), float(report.spacing))
        info["affine_lps"] = affine_lps(h0.iop, first, ps, step)  # type: ignore[arg-type]
        info["n_slices"] = len(headers)
    elif kind == "volume":
        info["shape"] = (h0.cols, h0.rows)
        info["spacing"] = (float(ps[1]), float(ps[0]))
        info["affine_lps"] = _flat_affine(h0, ps, 1.0)
        info["n_slices"] = len(headers)
        info["problems"].append(f"{len(headers)} 2D images without slice positions")
        info["kind"] = "image"
    elif kind == "image":
        info["shape"] = (h0.cols, h0.rows)
        info["spacing"] = (float(ps[1]), float(ps[0]))
        info["affine_lps"] = _flat_affine(h0, ps, float(h0.slice_thickness or 1.0))
        info["n_slices"] = 1
    else:
        n = sum(h.n_frames for h in headers)
        info["n_slices"] = n
        info["shape"] = (h0.cols, h0.rows, h0.n_frames)
        geometry = _multiframe_geometry(h0, h0.n_frames) if len(headers) == 1 else None
        if geometry is not None:
            ipps, iop, mps, _, _ = geometry
            report = check_spacing(ipps, slice_normal(iop))
            info["problems"] = report.describe([f"frame {o}" for o in report.order])
            step = slice_normal(iop) * (report.spacing or 1.0)
            info["spacing"] = (float(mps[1]), float(mps[0]), float(report.spacing or 1.0))
            info["affine_lps"] = affine_lps(iop, ipps[report.order[0]], mps, step)
        else:
            info["spacing"] = (float(ps[1]), float(ps[0]), 1.0)
            info["affine_lps"] = _flat_affine(h0, ps, 1.0)
        if len(headers) > 1:
            info["problems"].append(f"{len(headers)} multi-frame files in one series")
    if h0.samples == 3 or h0.photometric.startswith(("RGB", "YBR", "PALETTE")):
        info["channels"] = 3
    return info
