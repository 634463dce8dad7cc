"""Writing outputs: checking an output path before the work (:func:`check_output_file`, and
:func:`check_not_an_input`, the one rule that keeps an output off what a command reads), the one-line error for a
failed write (:func:`write_failed`), and :func:`convert`, which writes a series as NIfTI."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medtl.errors import MedtlError, UnknownOptionError
from medtl.io.nifti import is_nifti_path, write_nifti
from medtl.io.scan import read_scan_arrays

__all__ = ["check_output_file", "check_not_an_input", "write_failed", "convert"]


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


def _file_id(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file (hard links share it), else None."""
    try:
        st = path.stat()
    except (OSError, ValueError):  # missing, unreadable, a name the OS refuses (NUL, too long)
        return None
    return (st.st_dev, st.st_ino) if not os.path.isdir(path) else None


def check_not_an_input(
    outputs: Iterable[tuple[str | os.PathLike[str], str]],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    run_dir: str | os.PathLike[str] | None = None,
    fix: str = "give another path as --out",
) -> None:
    """Refuse, before anything is written, an output that would write over what the command reads.

    An output is refused when it is an input file (the same path once symlinks are resolved, or the same file under
    another name: a hard link), when it is or lies inside an input folder (a DICOM series folder: what is written
    there would be read as part of the scan), or when it is or lies inside the run folder ``run_dir`` (the run being
    read: its config, checkpoints and results).

    Args:
        outputs: ``(path, what)`` for every file or folder the command will write; ``what`` names it in the error
            (``"--out scores.csv"``, ``"the mask of a.nii.gz (out/a_mask.nii.gz)"``).
        inputs: every file and folder the command reads: the scans given, the manifests, and every file a manifest
            names (images, masks, any other path column). A folder among them is a scan folder.
        run_dir: the run folder the command reads, if any.
        fix: the fix the error proposes.

    Raises:
        MedtlError: an output hits an input or the run folder (the message names both).
    """
    files: dict[Path, Path] = {}  # resolved path -> as given
    ids: dict[tuple[int, int], Path] = {}
    folders: dict[Path, Path] = {}
    for given in inputs:
        given = Path(given)
        try:
            real = given.expanduser().resolve()
            is_dir = real.is_dir()
        except (OSError, ValueError, RuntimeError):  # a symlink loop, a name the OS refuses: nothing to protect
            continue
        if is_dir:
            folders.setdefault(real, given)
            continue
        files.setdefault(real, given)
        file_id = _file_id(real)
        if file_id is not None:
            ids.setdefault(file_id, given)
    run = Path(run_dir).expanduser().resolve() if run_dir is not None else None
    for out, what in outputs:
        target = Path(out).expanduser().resolve()
        hit = files.get(target)
        file_id = None if hit is not None else _file_id(target)
        hit = hit if hit is not None else ids.get(file_id) if file_id is not None else None
        if hit is not None:
            same = "" if hit.expanduser().resolve() == target else " (the same file under another name)"
            raise MedtlError(f"{what} is the input {hit}{same}: writing it would overwrite it", path=str(out), fix=fix)
        for folder in (target, *target.parents):
            if folder in folders:
                raise MedtlError(
                    f"{what} is inside the input scan folder {folders[folder]}: it would be mixed into the scan's own "
                    "files",
                    path=str(out),
                    fix=fix,
                )
        if run is not None and (target == run or run in target.parents):
            raise MedtlError(
                f"{what} is inside the run folder {run}, which is being read: it would replace or mix with the "
                "run's own files",
                path=str(out),
                fix=fix,
            )


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
    check_not_an_input([(out, f"output {out}")], [path], fix="choose another output path")
    # plain arrays: writing a NIfTI needs neither torch nor MONAI, whose import dwarfs a small conversion
    array, affine_ras, _ = read_scan_arrays(path, series, allow_irregular=allow_irregular)
    try:
        return write_nifti(np.asarray(array, dtype=np.float32), np.asarray(affine_ras, dtype=np.float64), out)
    except OSError as exc:
        raise write_failed(out, exc) from None
