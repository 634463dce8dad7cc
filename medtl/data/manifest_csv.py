"""Reading a manifest CSV and checking it row by row: every row becomes a :class:`Record` or a problem.

The format (columns ``image``, ``label``, ``patient_id``, ``split``, ``series``) and the rules are described in
:mod:`medtl.data.manifest`. All problems are collected before one :class:`~medtl.errors.ManifestError` lists
them with their row numbers. Patient IDs are pseudonymised here, as each row is read.

Two rows naming one scan are an error (:class:`_ScanIdentity`): the same path, the same file or folder reached
through a symlink (paths are resolved), a hard link (the same device and inode), or a copy (files of equal size
whose first and last 64 KiB, then whole contents, have the same SHA-256; files up to 512 MiB). Rows of one scan
under two patients say so, naming both rows and both (pseudonymised) patients: split by patient, such a scan lands
in train and test at once.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl.data.splits import SPLITS
from medtl.errors import ManifestError, MedtlError
from medtl.io import select_series
from medtl.utils import hash_patient_id

__all__ = ["UNLABELLED", "Record", "read_table", "parse_table", "read_dicom_patient_id", "is_nifti", "nifti_stem"]

logger = logging.getLogger("medtl.data.manifest")

_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test", "tst": "test"}
# how many files of a DICOM folder to try before giving up on finding a PatientID
_MAX_HEADER_TRIES = 16
#: The one class of a manifest read without labels (``labels_required=False`` and no label column): every row
#: belongs to it, so code that groups scans by label (splits, label fractions, counts) sees a single group.
UNLABELLED = "unlabelled"


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names (any case)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: str | os.PathLike[str]) -> str:
    """The file name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _candidate_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def read_dicom_patient_id(path: str | os.PathLike[str], series: str | None = None) -> str | None:
    """The raw DICOM PatientID of a file, or of the first DICOM file found in a folder (headers only).

    Args:
        path: a DICOM file or a folder searched recursively in sorted order.
        series: when given, only files of this series (SeriesInstanceUID or SeriesDescription) count.

    Returns:
        The PatientID, or None when no DICOM file with a PatientID was found among the first files tried.
    """
    import pydicom

    tries = 0
    for file in _candidate_files(Path(path)):
        if is_nifti(file):
            continue
        tries += 1
        if tries > _MAX_HEADER_TRIES:
            break
        try:
            ds = pydicom.dcmread(
                file,
                stop_before_pixels=True,
                force=True,
                specific_tags=["PatientID", "SeriesInstanceUID", "SeriesDescription", "SOPClassUID"],
            )
        except Exception:  # noqa: BLE001 - any unreadable file just does not count
            continue
        if series and series not in (str(ds.get("SeriesInstanceUID", "")), str(ds.get("SeriesDescription", ""))):
            tries -= 1  # files of other series do not use up the budget
            continue
        value = ds.get("PatientID")
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


@dataclass(frozen=True)
class Record:
    """One manifest row.

    Attributes:
        image: absolute path of the scan file or folder.
        label: class index into :attr:`Manifest.classes`.
        label_name: the class name as written in the CSV.
        patient_id: pseudonymised patient ID (:func:`~medtl.utils.hash_patient_id`).
        split: ``train``, ``val``, ``test`` or None.
        series: SeriesInstanceUID or SeriesDescription, or None.
        row: CSV row number (the header is row 1).
        extra: the other columns of the row, as written.
    """

    image: Path
    label: int
    label_name: str
    patient_id: str
    split: str | None = None
    series: str | None = None
    row: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (``image`` as a string), extra columns included under their names."""
        out: dict[str, Any] = {k: v for k, v in self.extra.items() if k not in _DICT_KEYS}
        out.update(
            image=str(self.image),
            label=self.label,
            label_name=self.label_name,
            patient_id=self.patient_id,
            split=self.split,
            series=self.series,
            row=self.row,
        )
        return out


_DICT_KEYS = ("image", "label", "label_name", "patient_id", "split", "series", "row")

# files up to this size are compared by content; larger ones only by path and inode
_CONTENT_LIMIT = 512 * 2**20
_EDGE = 64 * 2**10


class _ScanIdentity:
    """Finds the earlier row naming the same scan: same path, resolved path, inode, or content (see module doc)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[Any, ...], int] = {}
        self._by_size: dict[tuple[int, str | None], list[tuple[int, Path]]] = {}
        self._digests: dict[tuple[str, Path], str] = {}

    def _digest(self, kind: str, path: Path, size: int) -> str | None:
        key = (kind, path)
        if key not in self._digests:
            h = hashlib.sha256(str(size).encode())
            try:
                with open(path, "rb") as fh:
                    if kind == "edges":
                        h.update(fh.read(_EDGE))
                        if size > _EDGE:
                            fh.seek(max(_EDGE, size - _EDGE))
                            h.update(fh.read(_EDGE))
                    else:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            h.update(chunk)
            except OSError:  # unreadable: the reader says why when the scan is loaded
                return None
            self._digests[key] = h.hexdigest()
        return self._digests[key]

    def _same_content(self, a: Path, b: Path, size: int) -> bool:
        edges = self._digest("edges", a, size)
        if edges is None or edges != self._digest("edges", b, size):
            return False
        full = self._digest("full", a, size)
        return full is not None and full == self._digest("full", b, size)

    def first(self, n: int, image: Path, series: str | None) -> tuple[int, str] | None:
        """The earlier row naming the scan of row ``n`` and how it was recognised ("" for the same path), or None
        (row ``n`` is then remembered as that scan's first row)."""
        keys: list[tuple[tuple[Any, ...], str]] = [(("path", str(image), series), "")]
        st = None
        try:
            resolved = image.resolve()
            st = resolved.stat()
        except (OSError, RuntimeError):  # missing (reported as such), or a symlink loop
            resolved = None
        if resolved is not None and st is not None:
            keys.append((("path", str(resolved), series), "the same path through a symlink"))
            keys.append((("inode", st.st_dev, st.st_ino, series), "the same file: a hard link"))
        for key, how in keys:
            if key in self._rows:
                return self._rows[key], how
        if resolved is not None and st is not None and image.is_file() and 0 < st.st_size <= _CONTENT_LIMIT:
            same_size = self._by_size.setdefault((st.st_size, series), [])
            for m, other in same_size:
                if self._same_content(other, resolved, st.st_size):
                    return m, "a copy: the same bytes"
            same_size.append((n, resolved))
        for key, _ in keys:
            self._rows[key] = n
        return None


def _duplicate_problem(image_text: str, first: int, how: str, patients: tuple[str, str]) -> str:
    """The problem of a row naming the scan of row ``first``; ``patients``: (row ``first``'s, this row's)."""
    same = f"is also in row {first}" if not how else f"is the scan of row {first} ({how})"
    if patients[0] and patients[1] and patients[0] != patients[1]:
        return (
            f"image {image_text!r} {same}, but row {first} gives patient {patients[0]} and this row patient "
            f"{patients[1]} (pseudonyms): one scan under two patients can be split into train and test at once; "
            "keep one row, under the right patient"
        )
    return f"image {image_text!r} {same}"


def read_table(path: Path) -> list[list[str]]:
    """The cells of a manifest CSV file, row by row.

    Raises:
        ManifestError: the file is missing, not a file, not UTF-8 or not a valid CSV.
    """
    if not path.is_file():
        raise ManifestError(
            f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file",
            path=str(path),
            fix="pass the path of a CSV file with columns image,label[,patient_id,split,series]",
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=str(path),
            fix="save it as a UTF-8 CSV",
        ) from exc
    except csv.Error as exc:
        raise ManifestError(f"manifest {path} is not a valid CSV: {exc}", path=str(path)) from exc
    return table


def parse_table(
    table: list[list[str]],
    *,
    path: Path,
    classes: Sequence[str] | None,
    check_files: bool,
    label_column: str | None,
    image_column: str,
    labels_required: bool = True,
    patient_column: str = "patient_id",
) -> tuple[list[Record], list[str], bool]:
    """Check the header and every row of a manifest table (see :meth:`medtl.data.Manifest.from_csv`).

    With ``labels_required=False`` the label column may be absent (or empty in every row): every record then has
    label 0 and the label name :data:`UNLABELLED`, the only class. A label column with some cells filled is
    checked as always. ``label_column=None`` (with ``labels_required=False``) reads no column as class labels:
    every column other than image, patient, split and series stays in :attr:`Record.extra` as written, for a task
    that parses its own targets (a regression's numbers).

    Returns:
        The records, the class names in class-index order (``[UNLABELLED]`` for a manifest without labels), and
        whether the manifest gives labels.

    Raises:
        ManifestError: any problem, all of them listed with their row numbers.
    """
    if label_column is None and labels_required:
        raise ValueError("label_column=None reads no labels: pass labels_required=False with it")
    label_text = label_column or "label"  # for the messages below
    root = path.parent
    while table and not any(cell.strip() for cell in table[0]):
        table.pop(0)  # leading blank lines are not the header
    if not table:
        raise ManifestError(
            f"manifest {path} is empty: it has no header and no rows",
            path=str(path),
            fix=f"write a header line '{image_column},{label_text}' and one row per scan",
        )
    header = [h.strip() for h in table[0]]
    # known columns are matched case-insensitively; the user's own spelling is kept for extras
    lookup = {h.lower(): i for i, h in reversed(list(enumerate(header))) if h}
    wanted = {
        "image": image_column,
        "label": label_column,
        "patient_id": patient_column,
        "split": "split",
        "series": "series",
    }
    col = {key: lookup.get(name.lower()) if name is not None else None for key, name in wanted.items()}
    unlabelled = not labels_required and _label_column_unused(table, col["label"])
    if unlabelled and classes is not None:
        raise ManifestError(
            f"manifest {path} has no {label_column!r} values, but the classes {list(classes)} were given for them",
            path=str(path),
            fix=f"add a {label_column!r} column with a class per row, or leave data.classes unset",
        )

    header_problems = []
    for key in ("image",) if unlabelled else ("image", "label"):
        if col[key] is None:
            name = wanted[key]
            close = difflib.get_close_matches(name, [h for h in header if h], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            header_problems.append(f"missing column {name!r}{hint}")
    dupes = sorted({h for h in header if h and [x.lower() for x in header].count(h.lower()) > 1})
    if dupes:
        header_problems.append(f"duplicated column(s) {', '.join(map(repr, dupes))}")
    if header_problems:
        raise ManifestError(
            f"manifest {path}: {'; '.join(header_problems)}; the header is {','.join(header)!r}",
            path=str(path),
            fix=f"the first line must name the columns, at least {image_column},{label_text}",
        )

    rows = [(n, r) for n, r in enumerate(table[1:], start=2) if any(cell.strip() for cell in r)]
    if not rows:
        raise ManifestError(
            f"manifest {path} has a header but no rows",
            path=str(path),
            fix="add one row per scan: image,label",
        )

    problems: list[str] = []
    allowed = None if classes is None else [str(c) for c in classes]
    if allowed is not None and len(set(allowed)) != len(allowed):
        raise ManifestError(f"classes {allowed} has duplicates", path=str(path), fix="list each class once")
    extra_cols = [(i, h) for i, h in enumerate(header) if h and i not in {c for c in col.values() if c is not None}]
    patient_cache: dict[tuple[Path, str | None], tuple[str | None, str | None]] = {}
    identity = _ScanIdentity()
    patient_of_row: dict[int, str] = {}
    parsed: list[dict[str, Any]] = []
    nifti_stems: list[int] = []

    def cell(r: list[str], key: str) -> str:
        i = col[key]
        return r[i].strip() if i is not None and i < len(r) else ""

    for n, r in rows:
        row_problems: list[str] = []
        if len(r) > len(header):
            row_problems.append(f"has {len(r)} cells but the header has {len(header)} columns")
        image_text = cell(r, "image")
        label = cell(r, "label")
        split = cell(r, "split").lower() or None
        series = cell(r, "series") or None
        raw_patient = cell(r, "patient_id")

        image: Path | None = None
        duplicate: tuple[int, int, str] | None = None  # (where in row_problems, the earlier row, how)
        if not image_text:
            row_problems.append(f"empty {wanted['image']!r}")
        else:
            image = Path(os.path.expanduser(image_text))
            if not image.is_absolute():
                image = root / image
            image = Path(os.path.normpath(image))
            if check_files:
                if not image.exists():
                    row_problems.append(f"image {image_text!r} not found (looked for {image})")
                elif image.is_dir() and next(_candidate_files(image), None) is None:
                    row_problems.append(f"image folder {image_text!r} holds no files")
            found_first = identity.first(n, image, series)
            if found_first is not None:  # the message names both patients, known further down
                duplicate = (len(row_problems), *found_first)

        if unlabelled:
            label = UNLABELLED
        elif not label:
            row_problems.append(f"empty {wanted['label']!r}")
        elif allowed is not None and label not in allowed:
            close = difflib.get_close_matches(label, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            row_problems.append(f"unknown label {label!r}{hint}; allowed: {', '.join(allowed)}")

        if split is not None and split not in SPLITS:
            close = (
                [_SPLIT_ALIASES[split]] if split in _SPLIT_ALIASES else difflib.get_close_matches(split, SPLITS, n=1)
            )
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            row_problems.append(f"split {cell(r, 'split')!r} is not one of {', '.join(SPLITS)}{hint}")

        patient = ""
        if raw_patient:
            patient = hash_patient_id(raw_patient)
        elif image is not None:
            if is_nifti(image):
                patient = hash_patient_id(nifti_stem(image))
                nifti_stems.append(n)
            elif image.exists():
                cache_key = (image, series)
                if cache_key not in patient_cache:
                    patient_cache[cache_key] = _patient_of_series(image, series)
                found, problem = patient_cache[cache_key]
                if problem is not None:
                    row_problems.append(problem)
                elif found is None:
                    where = "column is empty in this row" if col["patient_id"] is not None else "column is absent"
                    row_problems.append(
                        f"no patient ID: the patient_id {where} and no DICOM file under {image_text!r} has a PatientID"
                    )
                else:
                    patient = found
            elif not check_files:
                row_problems.append(
                    f"no patient ID: image {image_text!r} not found, so its DICOM PatientID cannot be read"
                )

        patient_of_row[n] = patient
        if duplicate is not None:
            at, first, how = duplicate
            pair = (patient_of_row.get(first, ""), patient)
            row_problems.insert(at, _duplicate_problem(image_text, first, how, pair))
        problems.extend(f"row {n}: {p}" for p in row_problems)
        parsed.append(
            {
                "row": n,
                "image": image,
                "label_name": label,
                "patient_id": patient,
                "split": split,
                "series": series,
                "extra": {h: (r[i].strip() if i < len(r) else "") for i, h in extra_cols},
            }
        )

    if not unlabelled:
        problems.extend(_label_problems([(p["row"], p["label_name"]) for p in parsed], allowed))
    if problems:
        err = ManifestError(
            f"manifest {path} has {len(problems)} problem(s): " + "; ".join(problems),
            path=str(path),
            fix="fix these rows (row 1 is the header) and load it again",
        )
        err.problems = problems  # type: ignore[attr-defined]
        raise err

    if nifti_stems:
        rows_text = _row_ranges(nifti_stems)
        msg = (
            f"manifest {path}: no patient_id for {len(nifti_stems)} NIfTI row(s) ({rows_text}); each file's name "
            "stands in for its patient, so two scans of one patient would count as two patients. Add a "
            "patient_id column to keep a patient's scans in one split."
        )
        # once: a logger call as well printed it twice on the command line (warnings are shown by default)
        warnings.warn(msg, UserWarning, stacklevel=3)

    if unlabelled:
        class_names = [UNLABELLED]
    else:
        class_names = list(allowed) if allowed is not None else sorted({p["label_name"] for p in parsed})
    index = {c: i for i, c in enumerate(class_names)}
    records = [
        Record(
            image=p["image"],
            label=index[p["label_name"]],
            label_name=p["label_name"],
            patient_id=p["patient_id"],
            split=p["split"],
            series=p["series"],
            row=p["row"],
            extra=p["extra"],
        )
        for p in parsed
    ]
    return records, class_names, not unlabelled


def _label_column_unused(table: list[list[str]], index: int | None) -> bool:
    """Whether a manifest gives no labels: no label column, or one left empty in every row (a spreadsheet's)."""
    if index is None:
        return True
    return not any(index < len(r) and r[index].strip() for r in table[1:])


_MISSING_MARKERS = frozenset({"nan", "na", "n/a", "null", "<na>", "nat"})


def _label_problems(labels: Sequence[tuple[int, str]], allowed: Sequence[str] | None) -> list[str]:
    """Missing-value markers used as labels, and labels that differ only by case or inner spacing."""
    problems = []
    allowed_set = set(allowed or ())
    missing = [n for n, lab in labels if lab and lab.lower() in _MISSING_MARKERS and lab not in allowed_set]
    if missing:
        missing_set = set(missing)
        markers = ", ".join(sorted({repr(lab) for n, lab in labels if n in missing_set}))
        problems.append(
            f"{_row_ranges(missing)}: the label is a missing-value marker ({markers}), as spreadsheets and pandas "
            "write empty cells; fill in the class or drop these rows"
        )
    spellings: dict[str, dict[str, list[int]]] = {}
    for n, lab in labels:
        if lab:
            spellings.setdefault(" ".join(lab.split()).casefold(), {}).setdefault(lab, []).append(n)
    for variants in spellings.values():
        if len(variants) > 1:
            listed = " and ".join(f"{lab!r} ({_row_ranges(rows)})" for lab, rows in sorted(variants.items()))
            problems.append(
                f"labels {listed} differ only by case or spacing and would become separate classes; "
                "write each class one way"
            )
    return problems


def _patient_of_series(image: Path, series: str | None) -> tuple[str | None, str | None]:
    """(pseudonymised PatientID of the series read_scan reads, or None; a problem sentence, or None)."""
    try:
        info = select_series(image, series)
    except MedtlError as exc:
        return None, " ".join(str(exc).split())
    return (info.patient_id or None), None


def _row_ranges(rows: Sequence[int], limit: int = 8) -> str:
    """``rows 2-5, 9`` style text for a sorted list of row numbers."""
    spans: list[tuple[int, int]] = []
    for r in rows:
        if spans and r == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], r)
        else:
            spans.append((r, r))
    parts = [f"{a}-{b}" if a != b else str(a) for a, b in spans[:limit]]
    if len(spans) > limit:
        parts.append("...")
    return "rows " + ", ".join(parts)
