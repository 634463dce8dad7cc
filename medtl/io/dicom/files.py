"""Reading DICOM headers from files: one (:func:`read_header`) or many (:func:`read_headers`).

One file is read by the raw tag scan when it can, else by pydicom without its pixel data; anything that is not
a regular, non-empty file is refused before it is opened. Many files are read in a process pool when there are
enough of them, and a file that cannot be read becomes a reason instead of an exception, so one bad file cannot
end an index.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import stat
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
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
    path = path if isinstance(path, Path) else Path(path)
    if size is None:  # callers that walked the folder know it is a regular, non-empty file of this size
        size = _regular_file_size(path)
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
    except MedtlError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot open: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - a file that breaks the reader in an unforeseen way is one bad file
        return f"cannot read the header ({type(exc).__name__}: {exc})"


def _read_chunk(files: Sequence[tuple[str, int | None]]) -> list[DicomHeader | str]:
    """Headers (or reasons) of a chunk of (path, size) pairs; what a worker process of :func:`read_headers` runs."""
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
    if mp.current_process().daemon:  # e.g. a DataLoader worker: daemons cannot have children
        return None
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")  # workers need nothing but this module, already imported
    return mp.get_context("spawn")


def read_headers(
    paths: Sequence[Path], workers: int | None = None, sizes: Sequence[int] | None = None
) -> list[DicomHeader | str]:
    """Headers of ``paths`` in order, or for each file that cannot be read the reason why.

    Large sets are read in a process pool (see :func:`_header_workers`): header reads are pure-Python parsing,
    so threads would take turns on one core; processes do not.

    Args:
        paths: the files.
        workers: processes to use; default: :func:`_header_workers`.
        sizes: the files' sizes, when the caller has stat-ed them and knows they are regular files.
    """
    workers = workers or _header_workers()
    sized = list(zip(paths, sizes, strict=True)) if sizes is not None else [(p, None) for p in paths]
    ctx = _pool_context() if workers > 1 and len(paths) >= _POOL_MIN_FILES else None
    if ctx is None:
        return [_header_or_reason(p, size) for p, size in sized]
    patient_id_secret()  # read (or create) the secret once, before the workers start
    n_chunks = workers * 4
    size = -(-len(paths) // n_chunks)
    chunks = [[(os.fspath(p), n) for p, n in sized[i : i + size]] for i in range(0, len(sized), size)]
    out: list[DicomHeader | str] = []
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for part in pool.map(_read_chunk, chunks):
                out.extend(part)
    except (OSError, RuntimeError) as exc:  # no processes here (limits, sandbox): read them in this one
        logger.debug("header pool not used: %s", exc)
        return [_header_or_reason(p, n) for p, n in sized]
    return out
