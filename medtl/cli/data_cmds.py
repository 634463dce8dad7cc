"""Dataset commands: ``medtl index ROOT --out manifest.csv [--labels-from-folders]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register", "index"]


def index(
    root: Path = typer.Argument(..., help="Folder of DICOM series and/or NIfTI files (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write; image paths are relative to its folder."),
    labels_from_folders: bool = typer.Option(
        False, "--labels-from-folders", help="Label each scan by the first folder under ROOT (ROOT/<label>/...)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the rows and unreadable files as JSON."),
) -> None:
    """Index a tree of scans into a manifest CSV: one row per series, and the files that could not be read.

    Headers are cached in $MEDTL_HOME/cache by path, size and modification time, so indexing an unchanged tree
    again is quick (MEDTL_INDEX_CACHE=0 turns the cache off)."""
    from medtl.cli.io_cmds import printable
    from medtl.data.index import index_tree
    from medtl.io.output import check_output_file

    check_output_file(out, "manifest.csv")  # before the tree is read, not after
    result = index_tree(root, labels_from_folders=labels_from_folders)
    written = result.write_csv(out)
    if as_json:
        typer.echo(json.dumps(result.to_dict() | {"out": str(written)}, indent=2))
        return
    typer.echo(printable(f"wrote {len(result.rows)} row(s) to {written}"))
    if not labels_from_folders:
        typer.echo("the label column is empty: fill it in, or re-run with --labels-from-folders")
    for warning in result.warnings:
        typer.echo(printable(f"warning: {warning}"), err=True)
    if result.unreadable:
        typer.echo(f"{len(result.unreadable)} file(s) could not be read:", err=True)
        for u in result.unreadable:
            typer.echo(printable(f"  {u.path}: {' '.join(u.reason.split())}"), err=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command("index")(index)
