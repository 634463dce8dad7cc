"""Datasets: manifest CSVs (:class:`Manifest`), indexing a tree of scans (:func:`index_tree`), and splits."""

from __future__ import annotations

from medtl.data.index import IndexResult, index_tree
from medtl.data.manifest import Manifest, Record
from medtl.data.manifest_csv import read_dicom_patient_id
from medtl.data.splits import SPLITS

__all__ = ["Manifest", "Record", "SPLITS", "read_dicom_patient_id", "IndexResult", "index_tree"]

# --- splits (medtl/data/splits.py): add `from medtl.data.splits import ...` lines and their names below ---
from medtl.data.splits import label_fraction_patients, make_splits, read_splits_csv, write_splits_csv  # noqa: E402

__all__ += ["make_splits", "label_fraction_patients", "read_splits_csv", "write_splits_csv"]
# --- end of splits exports ---
