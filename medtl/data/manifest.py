"""Manifest CSVs: one row per scan, with its label, patient and optional split.

A manifest is a CSV file with the columns

``image``
    a scan file (DICOM, ``.nii``/``.nii.gz``) or a DICOM folder, relative to the CSV's folder (or absolute);
``label``
    the class name (optional when the manifest is read with ``labels_required=False``, as segmentation does: see
    below);
``patient_id`` (optional)
    the patient; when absent (or empty in a row) it is read from the DICOM ``PatientID`` header, and for
    NIfTI files the file name stands in (with a warning);
``split`` (optional)
    ``train``, ``val`` or ``test``;
``series`` (optional)
    a SeriesInstanceUID or SeriesDescription, for folders that hold several series.

Labels are taken exactly as written (surrounding spaces aside) and are never normalised: labels that differ
only by case or inner spacing (``Positive`` / ``positive``, ``no finding`` / ``no  finding``) would silently become
separate classes, so they are an error that names the rows of each spelling; so are empty labels and labels that
are a missing-value marker written by a spreadsheet or pandas (``nan``, ``NaN``, ``NA``, ``N/A``, ``null``,
``<NA>``), unless ``classes`` lists them.

When ``patient_id`` is not given for a DICOM row, it is the PatientID of the series that
:func:`medtl.read_scan` reads for that row (the ``series`` column, else the folder's largest series). A folder
holding several patients' series without a ``series`` column is an error that lists the series to choose from,
because a guess could put one patient's scan in two splits.

One scan may have one row: two rows naming the same file or folder (with the same ``series``) are an error naming
both, whether the paths are equal or reach the scan through a symlink, a hard link or a copy of the file; rows that
give it two patients name both (pseudonymised), since a patient split could put it in train and test at once.

A manifest read with ``labels_required=False`` (a segmentation manifest: ``image, mask[, patient_id]``) may leave
out the label column, or leave it empty in every row. It then has one class, :data:`UNLABELLED`, that every row
belongs to, and :attr:`Manifest.labelled` is False: splits are made by patient without stratification and a label
fraction keeps a fraction of the training patients. A label column with some cells filled is checked as above.

Other columns are kept. Loading validates every row and raises one :class:`~medtl.errors.ManifestError`
that lists every problem with its CSV row number (the header is row 1, the first scan row 2, as a
spreadsheet shows them). Patient IDs are always stored pseudonymised with
:func:`~medtl.utils.hash_patient_id`, never in clear text.

This module holds :class:`Manifest`; reading and checking the CSV row by row is
:mod:`medtl.data.manifest_csv`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from medtl.data.manifest_csv import UNLABELLED, Record, parse_table, read_table
from medtl.data.splits import SPLITS
from medtl.errors import ManifestError

__all__ = ["Manifest", "Record", "UNLABELLED"]


class Manifest:
    """The scans of a dataset with their labels, patients and splits, validated.

    Build one with :meth:`from_csv`. A manifest is a sequence of :class:`Record`; :meth:`to_dicts` gives the
    dicts MONAI datasets take.

    Attributes:
        labelled: False for a manifest read without labels (its one class is :data:`UNLABELLED`).
    """

    def __init__(
        self,
        records: Sequence[Record],
        classes: Sequence[str],
        *,
        path: str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        labelled: bool = True,
    ) -> None:
        self.records: list[Record] = list(records)
        self.classes: list[str] = list(classes)
        self.path: Path | None = None if path is None else Path(path)
        self.root: Path = Path(root) if root is not None else (self.path.parent if self.path else Path.cwd())
        self.labelled = labelled

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        *,
        classes: Sequence[str] | None = None,
        check_files: bool = True,
        label_column: str | None = "label",
        image_column: str = "image",
        labels_required: bool = True,
        patient_column: str = "patient_id",
    ) -> Manifest:
        """Read and validate a manifest CSV.

        Args:
            path: the CSV file.
            classes: the allowed labels, in class-index order; default: the sorted unique labels found.
            check_files: check that every image exists (a folder must hold at least one file).
            label_column: the column holding the labels; None (with ``labels_required=False``): no column is read
                as class labels and every other column stays in :attr:`Record.extra` as written, for a task that
                parses its own targets (a regression's numbers: :mod:`medtl.tasks.regression`).
            image_column: the column holding the scan paths.
            patient_column: the column holding the patient IDs.
            labels_required: False: a manifest without labels (no label column, or an empty one) is read as
                :attr:`labelled` False with the one class :data:`UNLABELLED`; ``classes`` must then be None.

        Returns:
            The manifest.

        Raises:
            ManifestError: the file is missing or empty, a required column is missing, ``classes`` were given for
                a manifest without labels, or any row has a problem; the message lists every problem with its row
                number.
        """
        path = Path(path).expanduser()
        table = read_table(path)
        path = path.resolve()
        records, class_names, labelled = parse_table(
            table,
            path=path,
            classes=classes,
            check_files=check_files,
            label_column=label_column,
            image_column=image_column,
            labels_required=labels_required,
            patient_column=patient_column,
        )
        return cls(records, class_names, path=path, root=path.parent, labelled=labelled)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in zip(self.classes, self.class_counts(), strict=True))
        if not self.labelled:
            counts = "no labels"
        return f"Manifest({self.path}, {len(self)} scans, {len(set(self.patients))} patients; {counts})"

    @property
    def labels(self) -> list[int]:
        """The class index of every record."""
        return [r.label for r in self.records]

    @property
    def patients(self) -> list[str]:
        """The (pseudonymised) patient ID of every record, one per record."""
        return [r.patient_id for r in self.records]

    @property
    def splits(self) -> list[str | None]:
        """The split of every record (None where the CSV gives none)."""
        return [r.split for r in self.records]

    def class_counts(self) -> list[int]:
        """How many records each class has, in class order."""
        counts = [0] * len(self.classes)
        for r in self.records:
            counts[r.label] += 1
        return counts

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per record: ``image`` (absolute path), ``label`` (class index), ``label_name``,
        ``patient_id``, ``split``, ``series``, ``row``, and the extra columns."""
        return [r.to_dict() for r in self.records]

    # ------------------------------------------------------------------ subsets

    def subset(self, indices: Iterable[int]) -> Manifest:
        """A manifest of the records at ``indices`` (same classes, path and root)."""
        return Manifest(
            [self.records[i] for i in indices], self.classes, path=self.path, root=self.root, labelled=self.labelled
        )

    def filter(
        self,
        predicate: Callable[[Record], bool] | None = None,
        *,
        split: str | Iterable[str] | None = None,
        patients: Iterable[str] | None = None,
        labels: Iterable[int | str] | None = None,
    ) -> Manifest:
        """A manifest of the records that pass every given condition.

        Args:
            predicate: a function of a :class:`Record`.
            split: keep records of this split (or these splits).
            patients: keep records of these (pseudonymised) patient IDs.
            labels: keep records of these classes (indices or names).
        """
        splits = None if split is None else ({split} if isinstance(split, str) else set(split))
        if splits is not None:
            bad = sorted(s for s in splits if s not in SPLITS)
            if bad:
                raise ManifestError(f"unknown split(s) {bad}; allowed: {', '.join(SPLITS)}")
        patient_set = None if patients is None else set(patients)
        label_set = None
        if labels is not None:
            label_set = set()
            for lab in labels:
                if isinstance(lab, str):
                    if lab not in self.classes:
                        raise ManifestError(f"unknown class {lab!r}; classes: {', '.join(self.classes)}")
                    label_set.add(self.classes.index(lab))
                else:
                    label_set.add(int(lab))
        keep = [
            i
            for i, r in enumerate(self.records)
            if (splits is None or r.split in splits)
            and (patient_set is None or r.patient_id in patient_set)
            and (label_set is None or r.label in label_set)
            and (predicate is None or predicate(r))
        ]
        return self.subset(keep)

    def with_splits(self, assignment: dict[str, str]) -> Manifest:
        """A copy whose records take their split from ``assignment`` (patient ID -> split)."""
        records = [replace(r, split=assignment.get(r.patient_id, r.split)) for r in self.records]
        return Manifest(records, self.classes, path=self.path, root=self.root, labelled=self.labelled)
