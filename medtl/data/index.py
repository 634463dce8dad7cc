"""Build a manifest from a tree of scans: one row per series, and a list of what could not be read.

:func:`index_tree` walks a folder of DICOM and NIfTI files with :func:`medtl.io.inspect_path` (headers
only), turns every series into a manifest row and keeps going past unreadable files, which it lists with
the reason. ``medtl index ROOT --out manifest.csv [--labels-from-folders]`` is the command-line twin.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.errors import NoImagesError
from medtl.io.output import check_output_file, write_failed
from medtl.io.scan_index import Unreadable, inspect_path
from medtl.utils import atomic_write_bytes

__all__ = ["IndexResult", "index_tree", "INDEX_COLUMNS"]

# columns written after image, label (and series when needed); they are extra columns for Manifest
INDEX_COLUMNS = ("modality", "kind", "description", "shape", "spacing", "problems")


@dataclass
class IndexResult:
    """What :func:`index_tree` found.

    Attributes:
        rows: one dict per series (or per file of a series that cannot be read as one image), with
            ``image`` as an absolute path, ``label`` (empty unless taken from folders), ``series``
            (the SeriesInstanceUID when the image folder holds other series too, else empty) and the
            columns of :data:`INDEX_COLUMNS`.
        unreadable: files that could not be read, with the reason.
        warnings: rows that need a look (e.g. no label folder), one sentence each.
        root: the folder that was indexed.
    """

    rows: list[dict[str, Any]]
    unreadable: list[Unreadable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    root: Path | None = None

    @property
    def columns(self) -> list[str]:
        """The CSV columns: ``image, label[, series]`` and :data:`INDEX_COLUMNS`."""
        cols = ["image", "label"]
        if any(r.get("series") for r in self.rows):
            cols.append("series")
        return cols + list(INDEX_COLUMNS)

    def table(self, relative_to: str | os.PathLike[str] | None = None) -> list[dict[str, str]]:
        """The rows as CSV cells, ``image`` relative to ``relative_to`` (a folder) when given."""
        out = []
        for r in self.rows:
            cells = {c: "" if r.get(c) is None else str(r.get(c)) for c in self.columns}
            if relative_to is not None:
                cells["image"] = Path(os.path.relpath(r["image"], relative_to)).as_posix()
            out.append(cells)
        return out

    def write_csv(self, out: str | os.PathLike[str]) -> Path:
        """Write the manifest CSV, with ``image`` relative to the CSV's folder.

        Returns:
            The path written.
        """
        out = check_output_file(out, "manifest.csv").resolve()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.table(relative_to=out.parent))
        try:
            atomic_write_bytes(out, buffer.getvalue().encode("utf-8"))
        except OSError as exc:
            raise write_failed(out, exc) from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "root": None if self.root is None else str(self.root),
            "rows": [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for r in self.rows],
            "unreadable": [{"path": str(u.path), "reason": u.reason} for u in self.unreadable],
            "warnings": list(self.warnings),
        }


def _fmt_tuple(values: Sequence[float | int]) -> str:
    return "x".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)


def _common_folder(folders: set[Path]) -> Path:
    return next(iter(folders)) if len(folders) == 1 else Path(os.path.commonpath([str(d) for d in folders]))


def index_tree(root: str | os.PathLike[str], *, labels_from_folders: bool = False) -> IndexResult:
    """Index every DICOM series and NIfTI file under ``root`` into manifest rows.

    A series whose files lie in one folder (with sub-folders) becomes a row whose ``image`` is that
    folder; a single-file image (radiograph, multi-frame object, NIfTI) becomes a row whose ``image`` is
    the file. When the image folder also holds other series, the row's ``series`` names its
    SeriesInstanceUID, so :func:`medtl.read_scan` picks the right one. A multi-file series that cannot be
    read as one image (files without slice positions, mixed orientations) gives one row per file.

    Args:
        root: the folder to index (a single file works too).
        labels_from_folders: take each row's label from the first folder under ``root`` on the way to the
            image (``ROOT/positive/...`` gives ``positive``).

    Returns:
        The rows, the unreadable files with reasons, and warnings.

    Raises:
        NoImagesError: ``root`` does not exist, or nothing under it could be read as an image.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise NoImagesError(f"{root} does not exist", path=str(root), fix="pass the folder that holds the scans")
    found = inspect_path(root)
    base = root if root.is_dir() else root.parent

    # every folder on the way from a series' files up to root -> the series found below it
    folders_of = [{f.parent for f in s.files} for s in found.series]
    below: dict[Path, set[int]] = {}
    for n, folders in enumerate(folders_of):
        for d in folders:
            while True:
                below.setdefault(d, set()).add(n)
                if d == base or d.parent == d:
                    break
                d = d.parent

    rows: list[dict[str, Any]] = []
    for n, s in enumerate(found.series):
        files = s.files
        info = {
            "modality": s.modality,
            "kind": s.kind,
            "description": s.description,
            "shape": _fmt_tuple(s.shape),
            "spacing": _fmt_tuple(s.spacing),
            "problems": "; ".join(s.problems),
        }
        if len(files) == 1 or not s.stackable:
            for f in files:
                row = {"image": f, "label": "", "series": ""} | info
                if len(files) > 1:
                    row |= {"kind": "image", "shape": "", "spacing": ""}
                rows.append(row)
            continue
        folder = _common_folder(folders_of[n])
        shared = len(below.get(folder, {n})) > 1
        rows.append({"image": folder, "label": "", "series": s.uid if shared else ""} | info)

    warnings: list[str] = []
    if labels_from_folders:
        for row in rows:
            rel = Path(row["image"]).relative_to(base).parts if Path(row["image"]).is_relative_to(base) else ()
            is_dir = Path(row["image"]).is_dir()
            if (is_dir and len(rel) >= 1) or (not is_dir and len(rel) >= 2):
                row["label"] = rel[0]
            else:
                where = "is the indexed folder itself" if not rel else "lies directly in the indexed folder"
                warnings.append(
                    f"{row['image']}: no label folder (the image {where}); put it in ROOT/<label>/ or fill the "
                    "label column by hand"
                )

    unreadable = list(found.unreadable)
    kept = []
    for row in rows:
        try:
            str(row["image"]).encode("utf-8")
        except UnicodeEncodeError:
            unreadable.append(
                Unreadable(
                    Path(row["image"]),
                    "the name is not valid UTF-8, so a manifest (a UTF-8 CSV) cannot hold it; rename it",
                )
            )
            continue
        kept.append(row)
    rows = kept
    unreadable.sort(key=lambda u: str(u.path))
    rows.sort(key=lambda r: (str(r["image"]), r.get("series") or ""))
    if not rows:
        reasons = "; ".join(f"{u.path}: {u.reason}" for u in unreadable[:5])
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise NoImagesError(
            f"no readable DICOM series or NIfTI file under {root}"
            + (f"; {len(unreadable)} file(s) could not be read: {reasons}{more}" if unreadable else ""),
            path=str(root),
            fix="point medtl index at the folder that holds the scans",
        )
    return IndexResult(rows=rows, unreadable=unreadable, warnings=warnings, root=root)
