"""DICOM reading: header-only indexing, grouping by series, sorting along the normal, decoding.

A folder is indexed by reading headers only (``stop_before_pixels``), in a thread pool. Slices are grouped
by SeriesInstanceUID and never mixed; a series is sorted by the projection of ImagePositionPatient on the
slice normal and checked for duplicated positions, gaps and uneven spacing before any pixel is decoded.
Uncompressed little-endian pixel data is read straight from the file at the offset the header scan found;
everything else goes through pydicom's pixel handlers (pylibjpeg plugins for RLE, JPEG, JPEG-LS, JPEG 2000).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import (
    GeometryError,
    InvalidHeaderError,
    MedtlError,
    MissingPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedScanError,
)
from medtl.io.geometry import SpacingReport, affine_lps, check_spacing, resample_slices, slice_normal
from medtl.io.tagscan import RawHeader, scan_tags
from medtl.utils import hash_patient_id

__all__ = [
    "DicomHeader",
    "FrameGeometry",
    "DicomImage",
    "read_header",
    "scan_headers",
    "group_series",
    "series_kind",
    "read_series",
    "read_dicom_file",
    "io_workers",
]

logger = logging.getLogger("medtl.io")

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_NATIVE_SYNTAXES = frozenset({_IMPLICIT_LE, _EXPLICIT_LE, "1.2.840.10008.1.2.2"})
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_RTDOSE_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_ORIENTATION_TOL = 1e-4
_DECODER_FIX = "install the decoders with `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle`"


def io_workers() -> int:
    """Threads used to scan headers and decode slices (``MEDTL_IO_WORKERS``, else the CPU count, at most 8)."""
    env = os.environ.get("MEDTL_IO_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


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


# --------------------------------------------------------------------------------------------- headers


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        seq = [float(v) for v in (value if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [value])]
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


def _peek_pixel_tag(fp: Any, offset: int, size: int) -> bool:
    if offset + 4 > size:
        return False
    fp.seek(offset)
    raw = fp.read(4)
    le = (int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little"))
    be = (int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big"))
    return le in _PIXEL_TAGS or be in _PIXEL_TAGS


def _regular_file_size(path: Path) -> int:
    """The size of a regular, non-empty file; anything else (FIFO, device, socket, folder, 0 bytes) is refused
    before it is opened, so that reading never blocks."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise NotDicomError(f"{path} is {what}", path=str(path), fix="pass a DICOM or NIfTI file, or a folder of them")
    if st.st_size == 0:
        raise TruncatedFileError(f"{path} is empty (0 bytes)", path=str(path), fix="copy or export the file again")
    return st.st_size


def read_header(path: str | os.PathLike[str], *, size: int | None = None) -> DicomHeader:
    """Read one DICOM file's header without its pixel data.

    Raises:
        NotDicomError: the file is not DICOM.
        TruncatedFileError: the header ends early.
        InvalidHeaderError: a header value breaks its rules (e.g. NumberOfFrames "1A").
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = path if isinstance(path, Path) else Path(path)
    if size is None:  # callers that walked the folder know it is a regular, non-empty file of this size
        size = _regular_file_size(path)
    raw = scan_tags(path, size)
    if raw is not None:
        return _header_from_raw(raw, path, size)
    with open(path, "rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            except Exception:  # noqa: BLE001 - anything pydicom cannot parse with force=True is not DICOM
                ds = None
            if ds is None or not any(k in ds for k in ("SOPClassUID", "Rows", "SeriesInstanceUID")):
                raise NotDicomError(
                    f"{path} is not a DICOM file (no 'DICM' marker and no DICOM image attributes)",
                    path=str(path),
                    fix="pass a DICOM file or folder, or a .nii/.nii.gz file",
                ) from None
        except (EOFError, OSError) as exc:
            raise TruncatedFileError(
                f"{path}: the DICOM header ends early ({exc})",
                path=str(path),
                fix="the file is incomplete; copy or export it again",
            ) from None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a broken header
            raise InvalidHeaderError(
                f"{path}: the DICOM header cannot be parsed ({type(exc).__name__}: {exc})",
                path=str(path),
                fix="the file is corrupt; export it again from the source system",
            ) from None
        offset = fp.tell()
        has_pixels = _peek_pixel_tag(fp, offset, size)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("TransferSyntaxUID", "")) == _DEFLATED:
            # the dataset was inflated in memory: the file offset says nothing; decoding will tell
            has_pixels = "Rows" in ds
            offset = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on invalid values; medtl raises typed errors instead
        return _header_from_dataset(ds, path, size, offset, has_pixels)


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
    """:class:`_Fields` over the raw values of :func:`medtl.io.tagscan.scan_tags` (little endian, ASCII text)."""

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


def _header_from_raw(raw: RawHeader, path: Path, size: int) -> DicomHeader:
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


def _header_from_dataset(ds: Any, path: Path, size: int, offset: int, has_pixels: bool) -> DicomHeader:
    f = _Fields(ds, path)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not ts:
        ts = _EXPLICIT_LE if not ds.is_implicit_VR else _IMPLICIT_LE
        if not ds.is_little_endian:
            ts = "1.2.840.10008.1.2.2"
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
    return scrub_text(text, _identifiers(f)) if text else ""


def _identifiers(f: _Fields) -> list[str]:
    """The patient's identifying values in this header (name parts, ID, birth date, accession number)."""
    name = f.converted("PatientName")
    parts = [p for p in name.replace("=", "^").replace(" ", "^").split("^") if len(p.strip()) >= 2]
    return [*parts, f.converted("PatientID"), f.text("PatientBirthDate"), f.text("AccessionNumber")]


def scrub_text(text: str, identifiers: Iterable[str]) -> str:
    """``text`` with every occurrence of the given identifying values (case-insensitive) replaced by ``[removed]``.

    Free-text header fields (SeriesDescription) are copied into medtl's outputs; some sites type the patient's
    name or ID into them. The identifying values of the same header are removed before the text goes anywhere.
    """
    import re

    if not text:
        return text
    lower = text.lower()
    found = {v.strip() for v in identifiers if v and len(v.strip()) >= 2 and v.strip().lower() in lower}
    out = text
    for value in sorted(found, key=len, reverse=True):
        out = re.sub(re.escape(value), "[removed]", out, flags=re.IGNORECASE)
    return out


def _header_or_reason(path: Path, size: int | None = None) -> DicomHeader | str:
    """The header, or why the file cannot be read; never raises, so one bad file cannot end an index."""
    try:
        return read_header(path, size=size)
    except MedtlError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot open: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - a file that breaks the reader in an unforeseen way is one bad file
        return f"cannot read the header ({type(exc).__name__}: {exc})"


def read_headers_chunk(files: Sequence[tuple[str, int | None]]) -> list[DicomHeader | str]:
    """Headers (or reasons) of a chunk of (path, size) pairs; what a worker process of :func:`scan_headers` runs."""
    return [_header_or_reason(Path(p), size) for p, size in files]


_POOL_MIN_FILES = 2000


def _header_workers() -> int:
    """Processes for header reading: ``MEDTL_IO_WORKERS`` when set, else one per CPU (at most 8) on machines
    with 4 or more CPUs. With fewer, starting and feeding workers cost more than they save (measured on 2 cores:
    3,000 files took 1.5 s with 2 processes and 1.2 s with one)."""
    env = os.environ.get("MEDTL_IO_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus) if cpus >= 4 else 1


def _pool_context() -> Any:
    """A multiprocessing context for header workers, or None where a pool must not be used."""
    import multiprocessing as mp
    import sys

    if mp.current_process().daemon:  # e.g. a DataLoader worker: daemons cannot have children
        return None
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")  # workers need nothing but this module, already imported
    return mp.get_context("spawn")


def scan_headers(
    paths: Sequence[Path], *, workers: int | None = None
) -> tuple[list[DicomHeader], list[tuple[Path, str]]]:
    """Read the headers of many files; large sets in a process pool (see :func:`_header_workers`).

    Header reads are pure-Python parsing, so threads would take turns on one core; processes do not.

    Returns:
        The headers read, and (path, reason) for every file that could not be read.
    """
    results = _read_many(paths, workers)
    headers: list[DicomHeader] = []
    bad: list[tuple[Path, str]] = []
    for p, r in zip(paths, results, strict=True):
        if isinstance(r, DicomHeader):
            headers.append(r)
        else:
            bad.append((p, r))
    return headers, bad


def _read_many(
    paths: Sequence[Path], workers: int | None = None, sizes: Sequence[int] | None = None
) -> list[DicomHeader | str]:
    """Headers (or reasons) of ``paths``, in order; ``sizes`` when the caller has stat-ed them (regular files)."""
    workers = workers or _header_workers()
    sized = list(zip(paths, sizes, strict=True)) if sizes is not None else [(p, None) for p in paths]
    ctx = _pool_context() if workers > 1 and len(paths) >= _POOL_MIN_FILES else None
    if ctx is None:
        return [_header_or_reason(p, size) for p, size in sized]
    from concurrent.futures import ProcessPoolExecutor

    from medtl.utils import patient_id_secret

    patient_id_secret()  # read (or create) the secret once, before the workers start
    n_chunks = workers * 4
    size = -(-len(paths) // n_chunks)
    chunks = [[(os.fspath(p), n) for p, n in sized[i : i + size]] for i in range(0, len(sized), size)]
    out: list[DicomHeader | str] = []
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for part in pool.map(read_headers_chunk, chunks):
                out.extend(part)
    except (OSError, RuntimeError) as exc:  # no processes here (limits, sandbox): read them in this one
        logger.debug("header pool not used: %s", exc)
        return [_header_or_reason(p, n) for p, n in sized]
    return out


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


# --------------------------------------------------------------------------------------------- pixels


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable on Linux); None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def ensure_memory(n_bytes: int, what: str, path: str | os.PathLike[str]) -> None:
    """Refuse, before allocating, to read something that needs more memory than the machine has.

    Raises:
        UnsupportedScanError: ``n_bytes`` is more than the memory available.
    """
    free = available_memory()
    if free is not None and n_bytes > free:
        raise UnsupportedScanError(
            f"{path}: {what} needs {n_bytes / 2**30:,.1f} GiB of memory to read; {free / 2**30:,.1f} GiB are free",
            path=str(path),
            fix="check the header (a corrupt size?), or read it on a machine with more memory",
        )


def _dims_text(h: DicomHeader) -> str:
    frames = f" x {h.n_frames} frame(s)" if h.n_frames > 1 else ""
    samples = f" x {h.samples} samples" if h.samples > 1 else ""
    return f"{h.rows} x {h.cols} pixels{frames}{samples} of {h.bits_allocated} bits"


def check_claimed_size(h: DicomHeader) -> None:
    """Refuse a header that claims more pixel data than its file holds, or than memory allows, before decoding.

    Raises:
        TruncatedFileError: uncompressed pixel data shorter than rows x columns x frames x samples says.
        UnsupportedScanError: the decoded image would not fit in memory.
    """
    n_values = h.rows * h.cols * h.n_frames * max(1, h.samples)
    if h.transfer_syntax in _NATIVE_SYNTAXES and h.pixel_offset is not None:
        need = (n_values + 7) // 8 if h.bits_allocated == 1 else n_values * max(1, h.bits_allocated // 8)
        if h.photometric == "YBR_FULL_422":  # chroma sampled every other pixel: 2 values per pixel, not 3
            need = need * 2 // 3
        present = max(0, h.file_size - h.pixel_offset - 8)
        if need > present:
            raise TruncatedFileError(
                f"{h.path}: the header claims {_dims_text(h)} ({need:,} bytes) but the file holds at most "
                f"{present:,} bytes of pixel data",
                path=str(h.path),
                fix="the file is incomplete or its header is corrupt; export it again",
            )
    # decoded stored values plus their float32 copy
    ensure_memory(n_values * (4 + max(1, h.bits_allocated // 8)), _dims_text(h), h.path)


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


def _read_native(h: DicomHeader) -> np.ndarray | None:
    """Pixel data of an uncompressed little-endian single-sample file, read at the known offset; else None."""
    if (
        h.pixel_offset is None
        or h.transfer_syntax not in (_IMPLICIT_LE, _EXPLICIT_LE)
        or h.samples != 1
        or h.photometric not in ("MONOCHROME1", "MONOCHROME2")
        or h.bits_allocated not in (8, 16, 32)
        or h.rows <= 0
        or h.cols <= 0
    ):
        return None
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(12)
        if len(head) < 8 or (int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")) != (
            0x7FE0,
            0x0010,
        ):
            return None
        if h.transfer_syntax == _EXPLICIT_LE:
            if head[4:6] not in (b"OB", b"OW"):
                return None
            length = int.from_bytes(head[8:12], "little")
            start = h.pixel_offset + 12
        else:
            length = int.from_bytes(head[4:8], "little")
            start = h.pixel_offset + 8
        itemsize = h.bits_allocated // 8
        count = h.rows * h.cols * h.n_frames
        if length == 0xFFFFFFFF:
            return None
        if length < count * itemsize or start + count * itemsize > h.file_size:
            _raise_truncated(h.path, count * itemsize, min(length, h.file_size - start))
        signed = h.pixel_representation == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{itemsize}")
        fp.seek(start)
        arr = np.fromfile(fp, dtype=dtype, count=count)
    if h.bits_stored < h.bits_allocated:
        shift = h.bits_allocated - h.bits_stored
        if signed:
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.array((1 << h.bits_stored) - 1, dtype=dtype)
    return arr.reshape(h.n_frames, h.rows, h.cols)


def _raise_truncated(path: Path, expected: int, found: int) -> None:
    raise TruncatedFileError(
        f"{path}: pixel data is truncated ({found} of {expected} bytes present)",
        path=str(path),
        fix="the file is incomplete; copy or export it again",
    )


def _decode_with_pydicom(h: DicomHeader) -> tuple[np.ndarray, str]:
    """All frames of a file as (frames, rows, cols[, 3]) and the photometric interpretation after decoding."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(h.path, force=True)
        except Exception as exc:  # noqa: BLE001
            raise TruncatedFileError(
                f"{h.path}: cannot read pixel data ({exc})", path=str(h.path), fix="copy or export the file again"
            ) from None
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            if h.has_pixels:  # the header scan saw the pixel data tag, but its value is cut off
                raise TruncatedFileError(
                    f"{h.path}: pixel data is truncated (the file ends inside it)",
                    path=str(h.path),
                    fix="the file is incomplete; copy or export it again",
                )
            raise MissingPixelDataError(
                f"{h.path} has no pixel data", path=str(h.path), fix="pass an image file or its folder"
            )
        if getattr(ds, "file_meta", None) is None:
            from pydicom.dataset import FileMetaDataset

            ds.file_meta = FileMetaDataset()
        if "TransferSyntaxUID" not in ds.file_meta:
            # some writers omit it; the encoding pydicom detected while parsing is the answer
            ds.file_meta.TransferSyntaxUID = h.transfer_syntax
        photometric = h.photometric
        try:
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - pydicom and the plugins raise many types
            text = str(exc)
            if "less than expected" in text or "truncat" in text.lower() or "end of" in text.lower():
                raise TruncatedFileError(
                    f"{h.path}: pixel data is truncated ({text.split(' - ')[0]})",
                    path=str(h.path),
                    fix="the file is incomplete; copy or export it again",
                ) from None
            if "plugin" in text.lower() or "decoder" in text.lower() or "handler" in text.lower():
                raise UnsupportedScanError(
                    f"{h.path}: cannot decode transfer syntax {h.transfer_syntax} ({text.splitlines()[0]})",
                    path=str(h.path),
                    fix=_DECODER_FIX,
                ) from None
            raise UnsupportedScanError(
                f"{h.path}: cannot decode pixel data ({type(exc).__name__}: {text.splitlines()[0] if text else ''})",
                path=str(h.path),
                fix="check the file with `medtl inspect`; re-export it uncompressed if it persists",
            ) from None
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
            photometric = "RGB"
        elif photometric.startswith("YBR") or photometric == "RGB" or h.samples == 3:
            # pydicom converts YCbCr to RGB while decoding (as_rgb=True)
            photometric = "RGB"
    if h.samples == 3 or photometric == "RGB":
        if arr.ndim == 3 and h.n_frames == 1:
            arr = arr[None]
    elif arr.ndim == 2:
        arr = arr[None]
    return arr, photometric


def decode_frames(h: DicomHeader) -> tuple[np.ndarray, str]:
    """Raw stored values of all frames, (frames, rows, cols) or (frames, rows, cols, 3), and the photometric."""
    if not h.has_pixels:
        raise MissingPixelDataError(
            f"{h.path} has no pixel data ({h.sop_class_name or 'unknown SOP class'})",
            path=str(h.path),
            fix="pass an image file (CT, MR, CR/DX, secondary capture...) or a folder of them",
        )
    check_claimed_size(h)
    arr = _read_native(h)
    if arr is not None:
        return arr, h.photometric
    return _decode_with_pydicom(h)


def _stored_range(h: DicomHeader) -> tuple[float, float]:
    if h.pixel_representation == 1:
        return float(-(1 << (h.bits_stored - 1))), float((1 << (h.bits_stored - 1)) - 1)
    return 0.0, float((1 << h.bits_stored) - 1)


def _to_physical(raw: np.ndarray, h: DicomHeader, photometric: str, slope: float, intercept: float) -> np.ndarray:
    """Stored values to float32 physical units; MONOCHROME1 is inverted so that high values are bright."""
    out = raw.astype(np.float32)
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(h)
        out = np.float32(lo + hi) - out
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def _physical_into(
    out: np.ndarray, raw: np.ndarray, h: DicomHeader, photometric: str, slope: float, intercept: float
) -> None:
    """:func:`_to_physical` written into ``out`` without temporaries (the hot loop of series reading)."""
    out[...] = raw
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(h)
        np.subtract(np.float32(lo + hi), out, out=out)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)


# --------------------------------------------------------------------------------------------- assembly


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
    rows, cols = _shape_of(h0)
    stack = np.empty((len(order_kept), rows, cols), dtype=np.float32)
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


def _shape_of(h: DicomHeader) -> tuple[int, int]:
    return h.rows, h.cols


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
    ensure_memory(len(headers) * h0.rows * h0.cols * 4, f"{len(headers)} slices of {_dims_text(h0)}", where)
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
            _physical_into(out[k], raw[0], h, photometric, h.slope, h.intercept)

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
        phys = _to_physical(frame, h, photometric, h.slope, h.intercept)
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
                _physical_into(out[k], raw[f], h, photometric, slopes[f], intercepts[f])

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
    phys = _to_physical(raw, h, photometric, h.slope, h.intercept)
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
    for iop in {h.iop for h in headers if h.iop is not None}:
        _check_iop(iop, _series_name(h0), str(h0.path.parent))
    if kind == "volume" and all(h.ipp is not None and h.iop is not None for h in headers):
        ipps = np.array([h.ipp for h in headers], dtype=np.float64)
        report = check_spacing(ipps, slice_normal(h0.iop))  # type: ignore[arg-type]
        labels = [headers[o].path.name for o in report.order]
        info["problems"] = report.describe(labels)
        orientations = {tuple(round(v, 4) for v in h.iop) for h in headers}  # type: ignore[union-attr]
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
