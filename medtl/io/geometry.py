"""Slice geometry: sorting along the slice normal, spacing checks, affines, orientation labels, resampling.

DICOM positions are in LPS millimetres; medtl's affines are RAS (as MONAI's readers and nibabel give), so
:data:`LPS_TO_RAS` flips the first two world axes. Voxel index ``i`` runs along DICOM columns, ``j`` along
rows and ``k`` along slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "SliceGeometry",
    "SpacingReport",
    "slice_normal",
    "check_spacing",
    "affine_lps",
    "orientation_label",
    "resample_slices",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Two slices closer than this (mm) along the normal are at the same position.
_DUPLICATE_MM = 1e-3
# A spacing that differs from the typical one by more than this fraction (and 0.01 mm) is irregular.
_UNEVEN_FRACTION = 0.01


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal of a slice from its ImageOrientationPatient (row cosines x column cosines)."""
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:6], dtype=np.float64)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


@dataclass
class SliceGeometry:
    """Position of one slice (a file, or a frame of a multi-frame file)."""

    label: str
    ipp: np.ndarray
    distance: float = 0.0


@dataclass
class SpacingReport:
    """What :func:`check_spacing` found in a stack of slices sorted along the normal."""

    order: list[int]
    distances: np.ndarray
    spacing: float
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[tuple[int, int, float]] = field(default_factory=list)
    uneven: list[tuple[int, int, float]] = field(default_factory=list)

    @property
    def regular(self) -> bool:
        return not (self.duplicates or self.gaps or self.uneven)

    def describe(self, labels: Sequence[str], limit: int = 4) -> list[str]:
        """Human-readable problems; ``labels`` are in sorted order."""
        out: list[str] = []
        for a, b in self.duplicates:
            out.append(
                f"slices {a} and {b} ({labels[a]}, {labels[b]}) are at the same position "
                f"{self.distances[a]:.3f} mm along the normal (a copied file, or several acquisitions or time "
                "points in one series?)"
            )
        for a, b, d in self.gaps:
            missing = max(1, round(d / self.spacing) - 1) if self.spacing > 0 else 1
            out.append(
                f"gap of {d:.3f} mm between slices {a} and {b} ({labels[a]}, {labels[b]}; expected "
                f"{self.spacing:.3f} mm: about {missing} slice(s) missing)"
            )
        for a, b, d in self.uneven:
            out.append(
                f"spacing of {d:.3f} mm between slices {a} and {b} ({labels[a]}, {labels[b]}; expected "
                f"{self.spacing:.3f} mm)"
            )
        if len(out) > limit:
            out = out[:limit] + [f"and {len(out) - limit} more"]
        return out


def check_spacing(ipps: np.ndarray, normal: np.ndarray) -> SpacingReport:
    """Sort slice positions along ``normal`` and find duplicated positions, gaps and uneven spacing.

    Args:
        ipps: (n, 3) ImagePositionPatient of each slice, in any order.
        normal: unit slice normal.

    Returns:
        The sort order, the sorted distances along the normal, the typical spacing, and the problems
        (indices refer to sorted positions).
    """
    dist = np.asarray(ipps, dtype=np.float64) @ np.asarray(normal, dtype=np.float64)
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    report = SpacingReport(order=[int(o) for o in order], distances=d, spacing=0.0)
    if len(d) < 2:
        return report
    diffs = np.diff(d)
    dup = diffs < _DUPLICATE_MM
    report.duplicates = [(int(a), int(a) + 1) for a in np.nonzero(dup)[0]]
    steps = diffs[~dup]
    if steps.size == 0:
        return report
    spacing = float(np.median(steps))
    # With many gaps the median may be a multiple of the true step: the smallest step is then a better guess.
    smallest = float(steps.min())
    if smallest > 0 and abs(spacing / smallest - round(spacing / smallest)) < 0.05 and spacing / smallest > 1.5:
        spacing = smallest
    report.spacing = spacing
    # rounding of ImagePositionPatient in real files gives jitter of a few hundredths of a millimetre
    tol = max(0.02, _UNEVEN_FRACTION * spacing)
    for a, step in enumerate(diffs):
        if step < _DUPLICATE_MM or abs(step - spacing) <= tol:
            continue
        ratio = step / spacing
        if ratio > 1.5 and abs(ratio - round(ratio)) * spacing <= tol:
            report.gaps.append((a, a + 1, float(step)))
        else:
            report.uneven.append((a, a + 1, float(step)))
    return report


def affine_lps(
    iop: Sequence[float], first_ipp: Sequence[float], pixel_spacing: Sequence[float], step: Sequence[float]
) -> np.ndarray:
    """4x4 voxel-to-LPS affine of a stack: i along the row cosines, j along the column cosines, k along ``step``.

    Args:
        iop: ImageOrientationPatient (6 values).
        first_ipp: ImagePositionPatient of slice k = 0.
        pixel_spacing: DICOM PixelSpacing, i.e. (distance between rows, distance between columns).
        step: world vector from one slice to the next (mm).
    """
    a = np.eye(4)
    a[:3, 0] = np.asarray(iop[:3], dtype=np.float64) * float(pixel_spacing[1])
    a[:3, 1] = np.asarray(iop[3:6], dtype=np.float64) * float(pixel_spacing[0])
    a[:3, 2] = np.asarray(step, dtype=np.float64)
    a[:3, 3] = np.asarray(first_ipp, dtype=np.float64)
    return a


def _axcodes(affine: np.ndarray) -> list[str | None]:
    """nibabel's ``aff2axcodes`` (``io_orientation`` then RAS letters), without importing nibabel, whose import
    pulls in pydicom and would double the start-up of ``medtl index``."""
    rzs = affine[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    rs = rzs / zooms
    p, s, qs = np.linalg.svd(rs, full_matrices=False)
    keep = s > s.max() * max(rs.shape) * np.finfo(s.dtype).eps
    r = np.dot(p[:, keep], qs[keep])
    codes: list[str | None] = [None, None, None]
    labels = (("L", "R"), ("P", "A"), ("I", "S"))
    for in_ax in np.argsort(np.min(-(r**2), axis=0), kind="stable"):
        col = r[:, in_ax]
        if not np.allclose(col, 0):
            out_ax = int(np.argmax(np.abs(col)))
            codes[int(in_ax)] = labels[out_ax][0 if col[out_ax] < 0 else 1]
            r[out_ax, :] = 0
    return codes


def orientation_label(affine_ras: np.ndarray, spatial_dims: int = 3) -> str:
    """Plane and axis codes of an affine, e.g. ``"axial (LPS)"`` or ``"oblique axial (LPS)"``.

    The codes name, for each voxel axis, the world direction it increases towards (in RAS letters, as
    nibabel's ``aff2axcodes``); the plane is that of the first two axes.
    """
    affine_ras = np.asarray(affine_ras, dtype=np.float64)
    codes = "".join(str(c) for c in _axcodes(affine_ras))
    if spatial_dims == 2:
        codes = codes[:2]
    rot = affine_ras[:3, :3]
    norms = np.linalg.norm(rot, axis=0)
    norms[norms == 0] = 1
    unit = rot / norms
    normal = np.cross(unit[:, 0], unit[:, 1])
    axis = int(np.argmax(np.abs(normal)))
    plane = ("sagittal", "coronal", "axial")[axis]
    aligned = all(np.max(np.abs(unit[:, c])) > 0.999 for c in range(2))
    return f"{plane if aligned else 'oblique ' + plane} ({codes})"


def resample_slices(stack: np.ndarray, distances: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Linearly resample slices at irregular ``distances`` (sorted, unique) onto a regular grid.

    Args:
        stack: (n, ...) slices in sorted order.
        distances: (n,) positions along the normal, strictly increasing.
        spacing: the regular step of the output.

    Returns:
        The resampled stack (m, ...) and the m output distances.
    """
    d0, d1 = float(distances[0]), float(distances[-1])
    m = int(round((d1 - d0) / spacing)) + 1
    targets = d0 + spacing * np.arange(m)
    out = np.empty((m,) + stack.shape[1:], dtype=np.float32)
    hi = np.searchsorted(distances, targets, side="left")
    for t, (pos, h) in enumerate(zip(targets, hi, strict=True)):
        if h < len(distances) and abs(distances[h] - pos) < _DUPLICATE_MM:
            out[t] = stack[h]
            continue
        h = int(min(max(h, 1), len(distances) - 1))
        lo = h - 1
        w = (pos - distances[lo]) / (distances[h] - distances[lo])
        w = float(min(max(w, 0.0), 1.0))
        out[t] = (1 - w) * stack[lo] + w * stack[h]
    return out, targets
