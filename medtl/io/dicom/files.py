"""Reading DICOM headers from files: one (:func:`read_header`) or many (:func:`read_headers`).

One file is read by the raw tag scan when it can, else by pydicom without its pixel data; anything that is not
a regular, non-empty file is refused before it is opened. Many files are read in a process pool when there are
enough of them, and a file that cannot be read becomes a reason instead of an exception, so one bad file cannot
end an index.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing as mp
import operator
import os
import stat
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtl.errors import InvalidHeaderError, MedtlError, NotDicomError, TruncatedFileError
from medtl.io.dicom.header import DEFLATED_EXPLICIT_VR_LE, DicomHeader, header_from_dataset, header_from_raw
from medtl.io.dicom.tagscan import scan_tags
from medtl.utils import patient_id_secret

__all__ = ["read_header", "read_headers"]

logger = logging.getLogger("medtl.io")

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}


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
    return _read_header(path if isinstance(path, Path) else Path(path), size)


def _read_header(path: Path | str, size: int | None) -> DicomHeader:
    """:func:`read_header` of ``path`` as given: helper processes pass strings (they send back values, not the path,
    so they need no ``Path`` per file)."""
    if size is None:  # callers that walked the folder know it is a regular, non-empty file of this size
        size = _regular_file_size(Path(path))
    raw = scan_tags(path, size)
    if raw is not None:
        return header_from_raw(raw, path, size)
    # only files the tag scan cannot read need pydicom (importing it costs ~0.5 s of an index)
    import pydicom
    from pydicom.errors import InvalidDicomError

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
        if meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LE:
            # the dataset was inflated in memory: the file offset says nothing; decoding will tell
            has_pixels = "Rows" in ds
            offset = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on invalid values; medtl raises typed errors instead
        return header_from_dataset(ds, path, size, offset, has_pixels)


def _header_or_reason(path: Path, size: int | None = None) -> DicomHeader | str:
    """The header, or why the file cannot be read; never raises, so one bad file cannot end an index."""
    try:
        return read_header(path, size=size)
    except Exception as exc:  # noqa: BLE001 - see _reason
        return _reason(exc)


def _reason(exc: Exception) -> str:
    """Why a file could not be read, from what reading it raised."""
    if isinstance(exc, MedtlError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot open: {exc.strerror or exc}"
    return f"cannot read the header ({type(exc).__name__}: {exc})"  # a file that breaks the reader: one bad file


_VALUES_AFTER_PATH = operator.attrgetter(*(f.name for f in dataclasses.fields(DicomHeader)[1:]))


def _values_or_reason(path: str, size: int | None) -> tuple[Any, ...] | str:
    """The header's field values after its path, or the reason the file cannot be read."""
    try:
        return _VALUES_AFTER_PATH(_read_header(path, size))
    except Exception as exc:  # noqa: BLE001 - see _reason
        return _reason(exc)


def _from_values(path: Path | str, values: tuple[Any, ...] | str) -> DicomHeader | str:
    if isinstance(values, str):
        return values
    return DicomHeader(path if isinstance(path, Path) else Path(path), *values)


_POOL_MIN_FILES = 500  # forked helpers; measured break-even on 2 cores: about 350 files
_SPAWN_MIN_FILES = 2000  # spawned helpers (not Linux) import medtl first: a fraction of a second each


def _header_workers() -> int:
    """Processes reading headers, this one included: ``MEDTL_IO_WORKERS`` when set, else one per CPU (at most 8)."""
    env = os.environ.get("MEDTL_IO_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus)


def _pool_context() -> Any:
    """A multiprocessing context for header workers, or None where a pool must not be used."""
    if mp.current_process().daemon:  # e.g. a DataLoader worker: daemons cannot have children
        return None
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")  # workers need nothing but this module, already imported
    return mp.get_context("spawn")


def _read_chunk(files: Sequence[tuple[str, int | None]]) -> list[tuple[Any, ...] | str]:
    """What a helper process of :func:`read_headers` runs: for each (path, size) pair, the header's field values
    after its path, or the reason the file cannot be read.

    Plain tuples, because unpickling 3,000 header objects (each with a ``Path``) in the parent took longer than
    reading half of the files; the parent puts its own paths back (:func:`_from_values`).
    """
    return [_values_or_reason(p, size) for p, size in files]


def _read_part(conn: Any, files: Sequence[tuple[str, int | None]]) -> None:
    """A helper process of :func:`read_headers`: read its part and send the values back (None if that failed)."""
    gc.disable()  # short-lived and makes no cycles: a collection would only copy the parent's memory pages
    try:
        conn.send(_read_chunk(files))
    except BaseException:  # noqa: BLE001 - the parent reads the part itself
        try:
            conn.send(None)
        except OSError:
            pass
    finally:
        conn.close()


def read_headers(
    paths: Sequence[Path], workers: int | None = None, sizes: Sequence[int] | None = None
) -> list[DicomHeader | str]:
    """Headers of ``paths`` in order, or for each file that cannot be read the reason why.

    Large sets are split between ``workers`` processes, this one among them (see :func:`_header_workers`):
    header reads are pure-Python parsing, so threads would take turns on one core; processes do not. Each helper
    gets its part when it starts (forked, nothing is sent) and sends back plain values once; a helper that fails
    or dies leaves its part to this process. (A ``ProcessPoolExecutor`` lost most of the gain here: its feeder
    and result threads need this process's interpreter, which is busy reading its own part.)

    Args:
        paths: the files.
        workers: processes to use; default: :func:`_header_workers`.
        sizes: the files' sizes, when the caller has stat-ed them and knows they are regular files.
    """
    workers = workers or _header_workers()
    sized = list(zip(paths, sizes, strict=True)) if sizes is not None else [(p, None) for p in paths]
    ctx = _pool_context() if workers > 1 and len(paths) >= _POOL_MIN_FILES else None
    if ctx is not None and ctx.get_start_method() != "fork" and len(paths) < _SPAWN_MIN_FILES:
        ctx = None
    if ctx is None:
        return [_header_or_reason(p, size) for p, size in sized]
    patient_id_secret()  # read (or create) the secret once, before the helpers start
    step = -(-len(sized) // workers)
    parts = [sized[i : i + step] for i in range(0, len(sized), step)]
    helpers = []
    for part in parts[1:]:
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_read_part, args=(send, [(os.fspath(p), n) for p, n in part]), daemon=True)
        try:
            proc.start()
        except OSError as exc:  # no processes here (limits, sandbox): this one reads the part
            logger.debug("header helper not started: %s", exc)
            receive.close()
            proc = None
        send.close()
        helpers.append((proc, receive))
    out = [_header_or_reason(p, n) for p, n in parts[0]]
    for part, (proc, receive) in zip(parts[1:], helpers, strict=True):
        values = None
        if proc is not None:
            try:
                values = receive.recv()
            except Exception as exc:  # noqa: BLE001 - died, or cut off mid-message: read its part here
                logger.debug("header helper failed: %s", exc)
            receive.close()
            proc.join()
        if values is None or len(values) != len(part):
            out.extend(_header_or_reason(p, n) for p, n in part)
        else:
            out.extend(_from_values(p, v) for (p, _), v in zip(part, values, strict=True))
    return out
