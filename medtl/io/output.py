"""Writing outputs: checking an output path before the work (:func:`check_output_file`), the one-line error for
a failed write (:func:`write_failed`), and :func:`convert`, which writes a series as NIfTI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medtl.errors import MedtlError, UnknownOptionError
from medtl.io.nifti import is_nifti_path, write_nifti
from medtl.io.scan import read_scan_arrays

__all__ = ["check_output_file", "write_failed", "convert"]


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
    """Write one series, read as :func:`~medtl.io.read_scan` reads it, as NIfTI with its RAS affine.

    Returns:
        The path written.
    """
    out = Path(out)
    if not is_nifti_path(out):
        raise UnknownOptionError(
            f"output {out} must end in .nii or .nii.gz", path=str(out), fix="name the output e.g. scan.nii.gz"
        )
    out = check_output_file(out, "scan.nii.gz")
    # plain arrays: writing a NIfTI needs neither torch nor MONAI, whose import dwarfs a small conversion
    array, affine_ras, _ = read_scan_arrays(path, series, allow_irregular=allow_irregular)
    try:
        return write_nifti(np.asarray(array, dtype=np.float32), np.asarray(affine_ras, dtype=np.float64), out)
    except OSError as exc:
        raise write_failed(out, exc) from None
