"""``medtl inspect`` and ``medtl convert``: list the series under a path, write one as NIfTI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "inspect_cmd", "convert_cmd", "format_index"]


def printable(text: object) -> str:
    """``text`` with undecodable bytes of file names (held as surrogates) shown as U+FFFD, so printing never fails."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def format_index(index: object) -> str:
    """A readable listing of a :class:`~medtl.io.ScanIndex`."""
    lines: list[str] = [f"{index.root}"]  # type: ignore[attr-defined]
    series = index.series  # type: ignore[attr-defined]
    unreadable = index.unreadable  # type: ignore[attr-defined]
    lines.append(f"{len(series)} series, {len(unreadable)} file(s) not read")
    for s in series:
        spacing = " x ".join(f"{v:g}" for v in s.spacing)
        shape = " x ".join(str(v) for v in s.shape)
        channels = f", {s.channels} channels" if s.channels > 1 else ""
        lines.append(
            f"- {s.uid}\n"
            f"    {s.modality or '-'}  {s.description!r}  {s.kind}, {s.n_slices} slice(s)/frame(s), "
            f"{len(s.files)} file(s){channels}\n"
            f"    shape {shape}  spacing {spacing} mm  {s.orientation}"
        )
        for problem in s.problems:
            lines.append(f"    ! {problem}")
    if unreadable:
        lines.append("not read:")
        for u in unreadable:
            lines.append(f"- {u.path}: {' '.join(u.reason.split())}")
    return printable("\n".join(lines))


def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="DICOM file, DICOM folder (searched recursively) or NIfTI file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """List the series under PATH (UID, modality, description, slices, shape, spacing, orientation)
    and the files that could not be read, from headers only."""
    from medtl.errors import NoImagesError
    from medtl.io import inspect_path

    index = inspect_path(path)
    typer.echo(json.dumps(index.to_dict(), indent=2) if as_json else format_index(index))
    if not index.series:
        first = index.unreadable[0] if index.unreadable else None
        detail = (
            f"{len(index.unreadable)} file(s) could not be read (first: {first.path}: {' '.join(first.reason.split())})"
            if first is not None
            else "it holds no files"
        )
        raise NoImagesError(
            f"nothing under {path} could be read as an image: {detail}",
            path=str(path),
            fix="pass DICOM or NIfTI files, or a folder holding them",
        )


def convert_cmd(
    path: Annotated[Path, typer.Argument(help="DICOM file or folder, or NIfTI file.")],
    out: Annotated[Path, typer.Argument(help="Output file, .nii or .nii.gz.")],
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID or SeriesDescription (default: the largest).")
    ] = None,
    allow_irregular: Annotated[
        bool, typer.Option("--allow-irregular", help="Resample uneven, missing or duplicated slices.")
    ] = False,
) -> None:
    """Write one series of PATH as NIfTI with its affine (RAS, as nibabel expects)."""
    import logging.handlers  # here, not at the top: it imports socket, which `medtl index` and `inspect` never use

    from medtl.io import convert, read_scan  # noqa: F401 - read_scan's logger reports the chosen series

    # the choice of series (and any resampling) is reported once the file is written; a failure is one line
    handler = logging.handlers.BufferingHandler(capacity=1000)
    logger = logging.getLogger("medtl.io")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        written = convert(path, out, series, allow_irregular=allow_irregular)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    for record in handler.buffer:
        typer.echo(printable(record.getMessage()), err=True)
    typer.echo(printable(f"wrote {written}"))


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``convert`` to ``app``."""
    app.command("inspect")(inspect_cmd)
    app.command("convert")(convert_cmd)
