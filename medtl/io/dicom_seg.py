"""DICOM Segmentation objects (SEG) in and out, with highdicom: label maps on the grid of the image medtl reads.

Reading (:func:`read_dicom_seg`, :func:`seg_to_label_map`): a SEG file (SOP Class Segmentation Storage
1.2.840.10008.5.1.4.1.1.66.4, or Label Map Segmentation Storage ...66.7) becomes a one-channel label map on the
voxel grid of the image it segments, as :func:`medtl.io.read_scan` returns that image (same array axes, same RAS
affine). Every SEG frame is placed by its own ImagePositionPatient, ImageOrientationPatient and PixelSpacing,
mapped through the inverse of the image's affine: neither the order of the frames nor the order of the slices
matters. A frame whose pixel grid is not the image's voxel grid is an error naming what differs, even where every
pixel would land on some voxel centre: another pixel spacing (a SEG at twice the spacing would fill one voxel in
four), rows and columns that do not run along the image's voxel axes, an offset by part of a voxel. A 2D image
without plane positions (a radiograph) takes its SEG frames pixel for pixel.

A SEG must also be of the image's series (when it lists ReferencedSeriesSequence), in its FrameOfReferenceUID and of
its patient (PatientID, compared in memory and never printed); without series references the last two still run.

Segments become label values:

* with ``classes`` (a segmentation config's ``segmentation.classes``), each segment's SegmentLabel is looked up in
  the classes (case and surrounding spaces ignored), then, failing that, the meaning of its segmented property
  type (e.g. "Lung"); the class's index is the label value. A segment that matches no class is an error that
  lists the segments and the classes.
* without ``classes``, the label value is the segment number.

Two segments claiming one voxel cannot be a label map: an error naming both segments. A BINARY frame counts where
its pixel is 1, a FRACTIONAL frame where it is at least half its MaximumFractionalValue; in a LABELMAP frame the
pixel value is the segment number.

Writing is :mod:`medtl.io.dicom_seg_write`.

highdicom is an optional dependency (``pip install 'medtl[seg]'``), imported only here, when a SEG is read or
written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import DataLoadError, UnsupportedScanError

__all__ = [
    "SEGMENTATION_STORAGE",
    "LABEL_MAP_SEGMENTATION_STORAGE",
    "SEG_SOP_CLASSES",
    "is_dicom_seg",
    "read_dicom_seg",
    "seg_to_label_map",
]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE)
INSTALL_FIX = "pip install 'medtl[seg]'"
# a frame pixel must land this close to a voxel centre of the image (in voxels) to be that voxel
GRID_TOLERANCE_VOXELS = 1e-2
_LPS_RAS = np.array([-1.0, -1.0, 1.0])


def _highdicom(path: str | os.PathLike[str] | None = None) -> Any:
    try:
        import highdicom
    except ImportError:
        raise DataLoadError(
            "reading or writing DICOM SEG needs highdicom, which is not installed",
            path=None if path is None else str(path),
            fix=INSTALL_FIX,
        ) from None
    return highdicom


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file holding a DICOM Segmentation object (from its SOP Class UID; pixels not read)."""
    p = Path(path)
    if not p.is_file() or p.name.lower().endswith((".nii", ".nii.gz")):
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything pydicom cannot read is not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


# ------------------------------------------------------------------------------------------------ geometry


def _item(fg: Any, sequence: str) -> Any:
    seq = fg.get(sequence) if fg is not None else None
    return seq[0] if seq else None


def _frame_geometry(ds: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame of ``ds``: ``(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)`` in LPS mm.

    Multi-frame objects give them in their functional groups (per frame, or shared); single-frame images as
    top-level attributes.

    Raises:
        UnsupportedScanError: a frame without a position, orientation or pixel spacing.
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    out = []
    for f in range(n):
        fg = per_frame[f] if per_frame is not None and f < len(per_frame) else None
        pos = _item(fg, "PlanePositionSequence") or _item(shared, "PlanePositionSequence")
        ori = _item(fg, "PlaneOrientationSequence") or _item(shared, "PlaneOrientationSequence")
        meas = _item(fg, "PixelMeasuresSequence") or _item(shared, "PixelMeasuresSequence")
        ipp = (pos or ds).get("ImagePositionPatient")
        iop = (ori or ds).get("ImageOrientationPatient")
        spacing = (meas or ds).get("PixelSpacing")
        if ipp is None or iop is None or spacing is None:
            missing = [k for k, v in (("ImagePositionPatient", ipp), ("ImageOrientationPatient", iop),
                                      ("PixelSpacing", spacing)) if v is None]  # fmt: skip
            raise UnsupportedScanError(
                f"{getattr(ds, 'filename', None) or 'a DICOM object'}: frame {f + 1} has no {', '.join(missing)}, "
                "so it cannot be placed in the image's space",
                path=str(getattr(ds, "filename", "") or "") or None,
                fix="DICOM SEG is supported for series with plane positions (CT, MR, PET) and for single 2D images",
            )
        out.append(
            (
                np.asarray([float(v) for v in ipp]),
                np.asarray([float(v) for v in iop]),
                np.asarray([float(v) for v in spacing]),
            )
        )
    return out


def _frame_voxels(
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray], rows: int, cols: int, inverse_affine: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Voxel indices ``(rows, cols, 3)`` of a frame's pixels in an image with ``inverse_affine`` (world RAS ->
    voxel), the largest distance of a pixel from its voxel centre, in voxels, and the frame's steps from one column
    and from one row to the next, in voxels."""
    ipp, iop, spacing = geometry
    origin = ipp * _LPS_RAS
    along_row = iop[:3] * _LPS_RAS * spacing[1]  # column index c moves along the row cosines by the column spacing
    along_col = iop[3:6] * _LPS_RAS * spacing[0]  # row index r moves along the column cosines by the row spacing
    rot, shift = inverse_affine[:3, :3], inverse_affine[:3, 3]
    o, dc, dr = rot @ origin + shift, rot @ along_row, rot @ along_col
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ijk = o + c[..., None] * dc + r[..., None] * dr
    rounded = np.rint(ijk)
    return rounded.astype(np.int64), float(np.abs(ijk - rounded).max()) if ijk.size else 0.0, dc, dr


def _rounded(values: Any) -> list[float]:
    return [float(round(float(v), 4)) + 0.0 for v in values]  # + 0.0: no -0.0


def _grid_difference(
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray], steps: tuple[np.ndarray, np.ndarray], affine: np.ndarray
) -> str:
    """What keeps a frame's pixel grid from being the voxel grid of ``affine`` (its columns and rows one voxel
    apart along two of the grid's axes), or "" when it is (its in-plane offset is checked by the caller).

    A frame at another pixel spacing, or whose rows run across the voxel axes, may still put every pixel on a voxel
    centre (a SEG at twice the spacing: one voxel in four); it is not the image's grid all the same.
    """
    _, iop, spacing = geometry
    units, axes = [], []
    for step in steps:
        axis = int(np.argmax(np.abs(step)))
        unit = np.zeros(3)
        unit[axis] = 1.0 if step[axis] > 0 else -1.0
        units.append((step, unit))
        axes.append(axis)
    if all(np.abs(step - unit).max() <= GRID_TOLERANCE_VOXELS for step, unit in units) and axes[0] != axes[1]:
        return ""
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    directions = [step / max(float(np.linalg.norm(step)), 1e-12) for step, _ in units]
    along_axes = all(np.abs(d - u).max() <= GRID_TOLERANCE_VOXELS for d, (_, u) in zip(directions, units, strict=True))
    if along_axes and axes[0] != axes[1]:
        dc_axis, dr_axis = axes
        return (
            f"has PixelSpacing {spacing[0]:g} x {spacing[1]:g} mm (rows x columns) where the image has "
            f"{sizes[dr_axis]:.4g} x {sizes[dc_axis]:.4g} mm"
        )
    image_iop = np.concatenate([affine[:3, 0] / sizes[0], affine[:3, 1] / sizes[1]]) * np.tile(_LPS_RAS, 2)
    return (
        f"has rows and columns (ImageOrientationPatient {_rounded(iop)}) that do not run along "
        f"the image's voxel axes (its ImageOrientationPatient {_rounded(image_iop)}, PixelSpacing {sizes[1]:.4g} x "
        f"{sizes[0]:.4g} mm)"
    )


def _frames_voxels(
    ds: Any, rows: int, cols: int, affine: np.ndarray, grid: Sequence[int]
) -> list[tuple[np.ndarray, float, str, str]]:
    """Per frame of ``ds``: voxel indices ``(rows, cols, 3)`` on the grid of ``affine`` (4x4, voxel -> world RAS),
    distance from voxel centres, a description of the frame and what keeps its pixel grid from being the voxel grid
    ("" when nothing does; see :func:`_grid_difference`).

    A single 2D image (one slice in ``grid``) whose frames carry no plane position (a radiograph) is matched pixel
    for pixel instead: frame pixel (row r, column c) is voxel (c, r, 0), as :func:`medtl.io.read_scan` lays out 2D
    images; the frame must then have the image's size.
    """
    try:
        geometries = _frame_geometry(ds)
    except UnsupportedScanError:
        if grid[2] != 1 or (cols, rows) != tuple(grid[:2]):
            raise
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        ijk = np.stack([c, r, np.zeros_like(r)], -1).astype(np.int64)
        n = int(ds.get("NumberOfFrames", 1) or 1)
        return [(ijk, 0.0, "(a 2D frame without position)", "") for _ in range(n)]
    inverse = np.linalg.inv(affine)
    out = []
    for geometry in geometries:
        ijk, off, dc, dr = _frame_voxels(geometry, rows, cols, inverse)
        where = f"(ImagePositionPatient {geometry[0].round(3).tolist()})"
        out.append((ijk, off, where, _grid_difference(geometry, (dc, dr), affine)))
    return out


def _affine_4x4(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    out = np.eye(4)  # a 2D image's (3, 3) affine: x, y in-plane; one slice in z
    out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
    return out


# ------------------------------------------------------------------------------------------------ reading


def _segment_values(seg: Any, classes: Sequence[str] | None, path: Path) -> dict[int, int]:
    """Segment number -> label value (see the module docstring)."""
    values: dict[int, int] = {}
    described: list[str] = []
    lookup: dict[str, int] = {}
    for i, c in enumerate(classes or []):
        key = str(c).strip().lower()
        if key in lookup:  # a segment labelled so would fit two classes: no silent choice of one
            raise DataLoadError(
                f"DICOM SEG {path}: segmentation.classes {list(classes or [])} holds {classes[lookup[key]]!r} and "
                f"{c!r}, which segment labels cannot tell apart (case is ignored)",
                path=str(path),
                fix="list each class once, with one spelling",
            )
        lookup[key] = i
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        label = str(item.get("SegmentLabel", "")).strip()
        prop = item.get("SegmentedPropertyTypeCodeSequence")
        meaning = str(prop[0].get("CodeMeaning", "")).strip() if prop else ""
        described.append(f"{number} {label or meaning or '(no label)'!r}")
        if classes is None:
            values[number] = number
            continue
        index = lookup.get(label.lower(), lookup.get(meaning.lower()))
        if index is None:
            continue
        values[number] = index
    if classes is not None and len(values) < len(seg.SegmentSequence):
        pairs = zip(described, seg.SegmentSequence, strict=True)
        unknown = [d for d, item in pairs if int(item.SegmentNumber) not in values]
        raise DataLoadError(
            f"DICOM SEG {path}: segment(s) {', '.join(unknown)} match none of segmentation.classes {list(classes)} "
            "(by SegmentLabel or segmented property type)",
            path=str(path),
            fix="name each class in segmentation.classes after a segment's label, or relabel the segments",
        )
    return values


def _frame_masks(seg: Any, path: Path) -> tuple[np.ndarray, list[list[int]]]:
    """The frames as ``(n, rows, cols)`` and, per frame, the segment number of its foreground (BINARY,
    FRACTIONAL), or an empty list when the pixel values are the segment numbers (LABELMAP)."""
    n = int(seg.get("NumberOfFrames", 1) or 1)
    try:
        frames = np.asarray(seg.pixel_array).reshape(n, int(seg.Rows), int(seg.Columns))
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged SEG: one line naming the SEG, not its image
        raise DataLoadError(
            f"cannot read the frames of DICOM SEG {path}: {' '.join(str(exc).split())[:200]}",
            path=str(path),
            fix="copy or export the SEG again",
        ) from None
    kind = str(seg.get("SegmentationType", "BINARY")).upper()
    if kind == "LABELMAP":
        return frames.astype(np.int64), [[] for _ in range(n)]
    if kind == "FRACTIONAL":
        frames = frames >= max(1, int(seg.get("MaximumFractionalValue", 255))) / 2
    else:
        frames = frames > 0
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    shared = _item(seg, "SharedFunctionalGroupsSequence")
    numbers = []
    for f in range(n):
        item = _item(per_frame[f], "SegmentIdentificationSequence") if f < len(per_frame) else None
        item = item or _item(shared, "SegmentIdentificationSequence")  # one segment: shared by all frames
        if item is None:
            raise DataLoadError(
                f"DICOM SEG {path}: frame {f + 1} does not say which segment it holds (no "
                "SegmentIdentificationSequence)",
                path=str(path),
                fix="write the SEG with a DICOM-conformant tool (highdicom, dcmqi)",
            )
        numbers.append([int(item.ReferencedSegmentNumber)])
    return frames.astype(np.int64), numbers


def _check_identity(
    seg: Any,
    path: Path,
    image_name: str,
    series_uid: str | None,
    frame_of_reference_uid: str | None,
    patient_id: str | None,
) -> None:
    """Refuse a SEG that names another series, another frame of reference or another patient than the image.

    Each check runs when both sides say: a SEG without ReferencedSeriesSequence is still checked by its
    FrameOfReferenceUID and PatientID. PatientIDs are compared here and never printed; a SEG that medtl wrote with
    ``deidentify`` carries the image's keyed pseudonym, which counts as the same patient.
    """
    fix = "pair each SEG with the image series it was drawn on"
    referenced = [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence") or []]
    if series_uid and referenced and series_uid not in referenced:
        raise DataLoadError(
            f"DICOM SEG {path} segments series {', '.join(referenced)}, not {image_name} (series {series_uid})",
            path=str(path),
            fix=fix,
        )
    seg_frame = str(seg.get("FrameOfReferenceUID", "") or "").strip()
    if frame_of_reference_uid and seg_frame and seg_frame != frame_of_reference_uid.strip():
        raise DataLoadError(
            f"DICOM SEG {path} is in FrameOfReferenceUID {seg_frame}, {image_name} in {frame_of_reference_uid}: its "
            "positions are another scan's coordinates",
            path=str(path),
            fix=fix,
        )
    seg_patient = str(seg.get("PatientID", "") or "").strip()
    if patient_id and patient_id.strip() and seg_patient and seg_patient != patient_id.strip():
        from medtl.utils import hash_patient_id

        if seg_patient != hash_patient_id(patient_id):
            raise DataLoadError(
                f"DICOM SEG {path}: the SEG's PatientID differs from the image's ({image_name})",
                path=str(path),
                fix=fix,
            )


def seg_to_label_map(
    path: str | os.PathLike[str],
    affine: Any,
    shape: Sequence[int],
    *,
    classes: Sequence[str] | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient_id: str | None = None,
    image_name: str = "the image",
) -> np.ndarray:
    """A DICOM SEG as a label map on an image's grid (see the module docstring).

    Args:
        path: the SEG file.
        affine: the image's voxel-to-world RAS affine (4x4; a 2D image's 3x3 is taken as one slice).
        shape: the image's spatial shape, as :func:`medtl.io.read_scan` gives it (X, Y[, Z]).
        classes: class names in label-value order (index 0 the background); segments are matched by label.
        series_uid: the image's SeriesInstanceUID; when given, a SEG that references series must reference it.
        frame_of_reference_uid: the image's FrameOfReferenceUID; when given, a SEG that has one must have it.
        patient_id: the image's PatientID as stored (compared, never printed); when given, a SEG that has one
            must have it (or its keyed pseudonym).
        image_name: how errors name the image (its path).

    Returns:
        An integer array of ``shape``.

    Raises:
        DataLoadError: not a SEG, highdicom missing, another series, frame of reference, patient or grid, unknown
            segments, overlaps.
    """
    path = Path(path)
    hd = _highdicom(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - a broken file: one line with its path
        # highdicom refuses some objects it writes itself (0.28: a radiograph's SEG, whose pixel measures have no
        # slice thickness); what is read here are standard attributes, which pydicom gives as well
        import pydicom

        try:
            seg = pydicom.dcmread(str(path))
        except Exception:  # noqa: BLE001
            raise DataLoadError(
                f"cannot read DICOM SEG {path}: {' '.join(str(exc).split())[:200]}", path=str(path)
            ) from None
    if str(seg.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise DataLoadError(
            f"{path} is not a DICOM Segmentation (SOP Class {seg.SOPClassUID})",
            path=str(path),
            fix="give a label-map NIfTI or a DICOM SEG as the mask",
        )
    _check_identity(seg, path, image_name, series_uid, frame_of_reference_uid, patient_id)
    spatial = tuple(int(s) for s in shape)
    grid = spatial + (1,) * (3 - len(spatial))
    values = _segment_values(seg, classes, path)
    frames, numbers = _frame_masks(seg, path)
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", s.SegmentNumber)) for s in seg.SegmentSequence}
    lut = np.zeros(max(values, default=0) + 1, dtype=np.int64)  # segment number -> label value
    for number, value in values.items():
        lut[number] = value
    out = np.zeros(grid, dtype=np.int64)
    owner = np.zeros(grid, dtype=np.int64)  # the segment number that set each voxel
    placed = _frames_voxels(seg, frames.shape[1], frames.shape[2], _affine_4x4(affine), grid)
    fix = "pair each SEG with the image series it was drawn on, or export it again on that series' own grid"
    for f, (ijk, off, where_text, mismatch) in enumerate(placed):
        if mismatch:  # every frame: a SEG on another grid is wrong where it is empty too
            raise DataLoadError(
                f"DICOM SEG {path} is not on the voxel grid of {image_name}: frame {f + 1} {where_text} {mismatch}",
                path=str(path),
                fix=fix,
            )
        if off > GRID_TOLERANCE_VOXELS:
            raise DataLoadError(
                f"DICOM SEG {path}: frame {f + 1} {where_text} lies {off:.3g} voxels off the voxel centres of "
                f"{image_name} ({'x'.join(map(str, spatial))} voxels)",
                path=str(path),
                fix=fix,
            )
        frame = frames[f]
        hit = frame > 0
        if not hit.any():
            continue
        where = ijk[hit]
        if (where < 0).any() or (where >= np.asarray(grid)).any():
            raise DataLoadError(
                f"DICOM SEG {path}: frame {f + 1} {where_text} falls outside {image_name} "
                f"({'x'.join(map(str, spatial))} voxels)",
                path=str(path),
                fix=fix,
            )
        segs = frame[hit] if not numbers[f] else np.full(len(where), numbers[f][0])
        unknown = sorted(set(np.unique(segs).tolist()) - set(values))
        if unknown:
            raise DataLoadError(
                f"DICOM SEG {path}: frame {f + 1} holds segment number(s) {unknown} that its SegmentSequence does "
                "not describe",
                path=str(path),
                fix="write the SEG with a DICOM-conformant tool (highdicom, dcmqi)",
            )
        i, j, k = where.T
        previous = owner[i, j, k]
        clash = (previous > 0) & (previous != segs)
        if clash.any():
            a, b = int(previous[clash][0]), int(segs[clash][0])
            raise DataLoadError(
                f"DICOM SEG {path}: segments {a} {names.get(a)!r} and {b} {names.get(b)!r} overlap "
                f"({int(clash.sum())} voxel(s) in frame {f + 1}), so the SEG is not one label map",
                path=str(path),
                fix="write non-overlapping segments (one class per voxel), or a label-map NIfTI",
            )
        owner[i, j, k] = segs
        out[i, j, k] = lut[segs]
    return out.reshape(spatial)


def _image_identity(meta: dict[str, Any]) -> tuple[str, str]:
    """The FrameOfReferenceUID and PatientID (as stored) of the DICOM image behind ``meta`` (a scan read by
    :func:`medtl.io.read_scan`), read from one file of its series; empty strings when it is not DICOM or cannot be
    read again (the checks that need them are then left out)."""
    if str(meta.get("source_format", "")) != "dicom":
        return "", ""
    import pydicom

    from medtl.errors import MedtlError

    path = Path(str(meta.get("filename_or_obj", "") or ""))
    try:
        if path.is_dir():
            from medtl.io.scan import select_series

            files = select_series(path, str(meta.get("series_uid") or "") or None).files
        elif path.is_file():
            files = [path]
        else:
            return "", ""
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True, specific_tags=["FrameOfReferenceUID", "PatientID"])
    except (MedtlError, OSError, IndexError, pydicom.errors.InvalidDicomError):
        return "", ""
    return str(ds.get("FrameOfReferenceUID", "") or ""), str(ds.get("PatientID", "") or "")


def read_dicom_seg(
    path: str | os.PathLike[str], image: Any, *, classes: Sequence[str] | None = None, image_path: str | None = None
) -> Any:
    """A DICOM SEG as a one-channel ``MetaTensor`` label map on the grid of ``image`` (see the module docstring).

    A DICOM image's FrameOfReferenceUID and PatientID are read again from one file of its series, so that a SEG of
    another scan or patient is refused even without series references.

    Args:
        path: the SEG file.
        image: the image it segments, as :func:`medtl.io.read_scan` returns it, or that image's path.
        classes: class names in label-value order; segments are matched to them by label.
        image_path: how errors name the image (default: the image's file name).

    Returns:
        ``MetaTensor`` ``(1, *spatial)`` float32 with the image's affine.

    Raises:
        DataLoadError: see :func:`seg_to_label_map`.
    """
    from medtl.io.scan import _metatensor, read_scan

    if isinstance(image, str | os.PathLike):
        image = read_scan(image)
    meta = dict(getattr(image, "meta", {}) or {})
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    name = image_path or str(meta.get("filename_or_obj", "the image"))
    frame_of_reference, patient = _image_identity(meta)
    label = seg_to_label_map(
        path,
        affine,
        tuple(image.shape[1:]),
        classes=classes,
        series_uid=str(meta.get("series_uid") or "") or None,
        frame_of_reference_uid=frame_of_reference or None,
        patient_id=patient or None,
        image_name=name,
    )
    keep = {k: meta[k] for k in ("spacing", "series_uid", "study_uid", "patient_id") if k in meta}
    return _metatensor(
        label[None].astype(np.float32),
        affine,
        keep | {"filename_or_obj": str(path), "source_format": "dicom-seg", "modality": "SEG", "kind": "seg"},
    )


# ------------------------------------------------------------------------------------------------ writing
