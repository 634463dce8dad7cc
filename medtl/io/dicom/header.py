"""The DICOM header record (:class:`DicomHeader`) and how one is built from a parsed header.

A header is parsed either by the raw tag scan of :mod:`medtl.io.dicom.tagscan` or by pydicom
(``stop_before_pixels``); both go through the same field readers here, so the two paths give equal records.
The patient ID is kept only as its keyed pseudonym, and free-text descriptions are scrubbed of the
patient's identifying values. Reading files is :mod:`medtl.io.dicom.files`.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.errors import InvalidHeaderError
from medtl.io.dicom.tagscan import RawHeader
from medtl.utils import hash_patient_id

__all__ = [
    "DicomHeader",
    "FrameGeometry",
    "header_from_dataset",
    "header_from_raw",
    "scrub_text",
    "scrub_dataset_text",
    "IMPLICIT_VR_LE",
    "EXPLICIT_VR_LE",
    "EXPLICIT_VR_BE",
    "DEFLATED_EXPLICIT_VR_LE",
]

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_RTDOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"


@dataclass
class FrameGeometry:
    """Geometry and rescale of one frame of a multi-frame object."""

    ipp: tuple[float, float, float] | None
    iop: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class DicomHeader:
    """What medtl needs from one DICOM file's header (read without its pixel data)."""

    path: Path
    series_uid: str
    study_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    description: str
    patient_id: str
    rows: int
    cols: int
    n_frames: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    ipp: tuple[float, float, float] | None
    iop: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    slope: float
    intercept: float
    transfer_syntax: str
    has_pixels: bool
    pixel_offset: int | None
    file_size: int
    instance_number: int | None
    units: str = ""
    frames: list[FrameGeometry] | None = None
    grid_offsets: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sop_class_name(self) -> str:
        """The SOP class's name (e.g. "CT Image Storage"); looked up when asked, so indexing needs no pydicom."""
        return _uid_name(self.sop_class)

    @property
    def is_dicomdir(self) -> bool:
        return self.sop_class == _DICOMDIR_CLASS


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        seq = [float(v) for v in (value if hasattr(value, "__iter__") else [value])]
    except (TypeError, ValueError):
        return None
    head = seq[:n]
    if len(head) < n or not all(map(math.isfinite, head)):
        return None
    return tuple(head)


def _float(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _seq_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _frame_geometry(ds: Any) -> list[FrameGeometry] | None:
    """Per-frame geometry of an enhanced multi-frame object (per-frame groups override shared ones)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    out = []
    for item in per_frame:

        def get(group: str, item: Any = item) -> Any:
            found = _seq_item(item, group)
            if found is None and shared is not None:
                found = _seq_item(shared, group)
            return found

        pos = get("PlanePositionSequence")
        ori = get("PlaneOrientationSequence")
        meas = get("PixelMeasuresSequence")
        pvt = get("PixelValueTransformationSequence")
        out.append(
            FrameGeometry(
                ipp=_floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None,
                iop=_floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None,
                pixel_spacing=_floats(meas.get("PixelSpacing"), 2) if meas is not None else None,
                slope=_float(pvt.get("RescaleSlope"), 1.0) if pvt is not None else 1.0,
                intercept=_float(pvt.get("RescaleIntercept"), 0.0) if pvt is not None else 0.0,
            )
        )
    return out


def _positive_spacing(value: Any) -> tuple[float, float] | None:
    sp = _floats(value, 2)
    if sp is None or sp[0] <= 0 or sp[1] <= 0:
        return None
    return sp  # type: ignore[return-value]


class _Fields:
    """Reads header values from pydicom's raw elements, skipping its per-value conversion machinery.

    Indexing a large tree spends most of its time converting values pydicom parsed lazily; the few
    fields medtl needs are plain strings, decimal strings and unsigned shorts, decoded here directly.
    """

    def __init__(self, ds: Any, path: Path) -> None:
        self.ds = ds
        self.path = path

    def _element(self, keyword: str) -> Any:
        try:
            return self.ds.get_item(_tag(keyword))
        except KeyError:
            return None

    def text(self, keyword: str) -> str:
        elem = self._element(keyword)
        if elem is None:
            return ""
        value = elem.value
        if isinstance(value, bytes | bytearray):
            return value.decode("latin-1").strip(" \x00")
        if value is None:
            return ""
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return "\\".join(str(v) for v in value)
        return str(value).strip()

    def floats(self, keyword: str, n: int) -> tuple[float, ...] | None:
        text = self.text(keyword)
        if not text:
            return None
        return _floats(text.split("\\"), n)

    def number(self, keyword: str, default: float) -> float:
        text = self.text(keyword)
        return _float(text.split("\\")[0], default) if text else default

    def integer(self, keyword: str, default: int) -> int:
        """An IS value; a non-integer is an InvalidHeaderError."""
        text = self.text(keyword)
        if not text:
            return default
        try:
            return int(text.split("\\")[0])
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = float("nan")
            if as_float.is_integer():
                return int(as_float)
            raise InvalidHeaderError(
                f"{self.path}: {keyword} is {text!r}, which is not an integer",
                path=str(self.path),
                fix="the file is corrupt or was written by a broken tool; re-export it from the source system",
            ) from None

    def ushort(self, keyword: str, default: int) -> int:
        elem = self._element(keyword)
        if elem is None:
            return default
        value = elem.value
        if isinstance(value, bytes | bytearray):
            if len(value) < 2:
                return default
            return int.from_bytes(value[:2], "little" if getattr(elem, "is_little_endian", True) else "big")
        try:
            return int(value)
        except (TypeError, ValueError):
            return default

    def converted(self, keyword: str) -> str:
        """Text whose character set matters (PatientID, descriptions): ASCII directly, the rest through pydicom."""
        elem = self._element(keyword)
        if elem is not None and isinstance(elem.value, bytes | bytearray) and elem.value.isascii():
            return elem.value.decode("ascii").strip(" \x00")
        return str(self.ds.get(keyword, "") or "").strip()


class _RawFields(_Fields):
    """:class:`_Fields` over the raw values of :func:`medtl.io.dicom.tagscan.scan_tags` (little endian, ASCII text)."""

    def __init__(self, values: dict[str, bytes], path: Path) -> None:
        self.values = values
        self.path = path
        self.texts = {k: v.decode("latin-1").strip(" \x00") for k, v in values.items()}

    def text(self, keyword: str) -> str:
        return self.texts.get(keyword, "")

    def ushort(self, keyword: str, default: int) -> int:
        value = self.values.get(keyword)
        if value is None or len(value) < 2:
            return default
        return int.from_bytes(value[:2], "little")

    def converted(self, keyword: str) -> str:
        return self.text(keyword)  # the scanner hands non-ASCII text to pydicom


@functools.lru_cache(maxsize=256)
def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - keywords are fixed in this module
        raise KeyError(keyword)
    return tag


@functools.lru_cache(maxsize=256)
def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    try:
        return UID(uid).name if uid else ""
    except Exception:  # noqa: BLE001
        return uid


def header_from_raw(raw: RawHeader, path: Path, size: int) -> DicomHeader:
    """The header of ``path`` from the values the raw tag scan found."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _build_header(
            _RawFields(raw.values, path),
            path,
            size,
            raw.pixel_offset,
            raw.has_pixels,
            raw.transfer_syntax,
            raw.media_sop_class,
            None,
        )


def header_from_dataset(ds: Any, path: Path, size: int, offset: int, has_pixels: bool) -> DicomHeader:
    """The header of ``path`` from a pydicom dataset read without pixels (``offset``: where the pixel data starts)."""
    f = _Fields(ds, path)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        ts = EXPLICIT_VR_LE if not ds.is_implicit_VR else IMPLICIT_VR_LE
        if not ds.is_little_endian:
            ts = EXPLICIT_VR_BE
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta else ""
    frames = _frame_geometry(ds) if "PerFrameFunctionalGroupsSequence" in ds else None
    return _build_header(f, path, size, offset, has_pixels, ts, media_class, frames)


def _build_header(
    f: _Fields,
    path: Path,
    size: int,
    offset: int,
    has_pixels: bool,
    ts: str,
    media_class: str,
    frames: list[FrameGeometry] | None,
) -> DicomHeader:
    sop_class = f.text("SOPClassUID") or media_class
    n_frames = f.integer("NumberOfFrames", 1)
    try:
        instance: int | None = f.integer("InstanceNumber", -1)
    except InvalidHeaderError:
        instance = None
    pixel_spacing = _positive_spacing(f.floats("PixelSpacing", 2))
    if pixel_spacing is None:
        pixel_spacing = _positive_spacing(f.floats("ImagerPixelSpacing", 2))
    grid_text = f.text("GridFrameOffsetVector")
    grid = _floats(grid_text.split("\\"), 1) and [float(v) for v in grid_text.split("\\")] if grid_text else None
    slope = f.number("RescaleSlope", 1.0)
    intercept = f.number("RescaleIntercept", 0.0)
    units = ""
    if sop_class == _RTDOSE_CLASS:
        slope = f.number("DoseGridScaling", 1.0)
        intercept = 0.0
        units = f.text("DoseUnits")
    modality = f.text("Modality")
    if modality == "CT":
        units = "HU"
    bits_allocated = f.ushort("BitsAllocated", 16)
    return DicomHeader(
        path=path,
        series_uid=f.text("SeriesInstanceUID"),
        study_uid=f.text("StudyInstanceUID"),
        sop_uid=f.text("SOPInstanceUID"),
        sop_class=sop_class,
        modality=modality,
        description=_description(f),
        patient_id=hash_patient_id(f.converted("PatientID")),
        rows=f.ushort("Rows", 0),
        cols=f.ushort("Columns", 0),
        n_frames=max(1, n_frames),
        samples=f.ushort("SamplesPerPixel", 1),
        photometric=f.text("PhotometricInterpretation") or "MONOCHROME2",
        bits_allocated=bits_allocated,
        bits_stored=f.ushort("BitsStored", bits_allocated),
        pixel_representation=f.ushort("PixelRepresentation", 0),
        ipp=f.floats("ImagePositionPatient", 3),  # type: ignore[arg-type]
        iop=f.floats("ImageOrientationPatient", 6),
        pixel_spacing=pixel_spacing,
        slice_thickness=f.number("SliceThickness", 0.0) or None,
        slope=slope,
        intercept=intercept,
        transfer_syntax=ts,
        has_pixels=has_pixels,
        pixel_offset=offset if has_pixels and offset >= 0 else None,
        file_size=size,
        instance_number=None if instance is None or instance < 0 else instance,
        units=units,
        frames=frames,
        grid_offsets=grid or None,
    )


def _description(f: _Fields) -> str:
    text = f.converted("SeriesDescription")
    return _scrub(f, text) if text else ""


def _scrub(f: _Fields, text: str) -> str:
    return scrub_text(text, _identifiers(f), dates=[f.text("PatientBirthDate")])


def _identifiers(f: _Fields) -> list[str]:
    """The patient's identifying values in this header (name parts, ID, birth date, accession number)."""
    name = f.converted("PatientName")
    parts = [p for p in name.replace("=", "^").replace(" ", "^").split("^") if len(p.strip()) >= 2]
    return [*parts, f.converted("PatientID"), f.text("PatientBirthDate"), f.text("AccessionNumber")]


def scrub_dataset_text(ds: Any, keyword: str) -> str:
    """The free-text element ``keyword`` of a pydicom dataset (e.g. StudyDescription), scrubbed of the patient's
    identifying values in the same dataset as :func:`scrub_text` does (name, ID, birth date in any written form,
    accession number); "" when absent."""
    f = _Fields(ds, Path(str(getattr(ds, "filename", "") or "")))
    text = f.converted(keyword)
    return _scrub(f, text) if text else ""


_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
# between the parts of a written date: - . / _ , or spaces, or nothing (19450113)
_SEP = r"(?:\s*[-./_,]\s*|\s+)?"


@functools.lru_cache(maxsize=64)
def _date_pattern(value: str) -> re.Pattern[str] | None:
    """A pattern for the DICOM date ``value`` (DA, ``YYYYMMDD``; also the old ``YYYY.MM.DD``) as people write it:
    day-month-year, month-day-year and year-month-day; separated by ``-./_,`` or spaces or nothing; with or without
    leading zeros; two- or four-digit years; months as numbers, names or abbreviations (``13 Jan 1945``,
    ``January 13th, 1945``). None when ``value`` is not a valid date."""
    digits = re.sub(r"[-./ ]", "", value.strip())
    if not re.fullmatch(r"\d{8}", digits):
        return None
    y, m, d = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    try:
        datetime.date(y, m, d)
    except ValueError:
        return None
    year = f"(?:{y // 100:02d})?{y % 100:02d}"
    month = f"0?{m}" if m < 10 else str(m)
    day = f"0?{d}" if d < 10 else str(d)
    full = _MONTHS[m - 1]
    endings = [re.escape(full[3:]), r"\."] + ([r"t\.?"] if full == "september" else [])
    name = f"{full[:3]}(?:{'|'.join(endings)})?"
    nth = r"(?:st|nd|rd|th)?"
    forms = [
        f"{day}{_SEP}{month}{_SEP}{year}",
        f"{month}{_SEP}{day}{_SEP}{year}",
        f"{year}{_SEP}{month}{_SEP}{day}",
        f"{day}{nth}{_SEP}(?:of\\s+)?{name}{_SEP}{year}",
        f"{name}{_SEP}{day}{nth}{_SEP}{year}",
        f"{year}{_SEP}{name}{_SEP}{day}{nth}",
    ]
    return re.compile(r"(?<![0-9])(?:" + "|".join(forms) + r")(?![0-9])", re.IGNORECASE)


def scrub_text(text: str, identifiers: Iterable[str], *, dates: Iterable[str] = ()) -> str:
    """``text`` with every occurrence of the given identifying values (case-insensitive) replaced by ``[removed]``.

    Free-text header fields (SeriesDescription, StudyDescription) are copied into medtl's outputs; some sites type
    the patient's name, ID or birth date into them. The identifying values of the same header are removed before
    the text goes anywhere.

    Args:
        text: the free text.
        identifiers: values removed where they occur literally (name parts, IDs, accession number).
        dates: DICOM dates (``YYYYMMDD``, e.g. PatientBirthDate) removed in every common written form: ``19450113``,
            ``1945-01-13``, ``13.01.1945``, ``13/01/45``, ``01/13/1945``, ``13 Jan 1945``, ``January 13, 1945``...
    """
    if not text:
        return text
    out = text
    for value in dates:
        pattern = _date_pattern(str(value or ""))
        if pattern is not None:
            out = pattern.sub("[removed]", out)
    lower = out.lower()
    found = {v.strip() for v in identifiers if v and len(v.strip()) >= 2 and v.strip().lower() in lower}
    for value in sorted(found, key=len, reverse=True):
        out = re.sub(re.escape(value), "[removed]", out, flags=re.IGNORECASE)
    return out
