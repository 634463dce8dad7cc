"""Reading scans: DICOM series, single and multi-frame DICOM files, and NIfTI, as MONAI ``MetaTensor``s.

``read_scan`` returns one scan, channel first, in physical units (CT in Hounsfield units), with a RAS
affine built from the DICOM geometry; ``inspect_path`` lists the series under a path from headers only;
``convert`` writes a series as NIfTI; ``LoadScan`` / ``LoadScand`` start a MONAI pipeline.

MONAI and torch are imported only when a scan is read or a transform is built, so listing a tree
(``medtl inspect``) starts quickly.
"""

from __future__ import annotations

from typing import Any

from medtl.io.scan import ScanIndex, SeriesInfo, Unreadable, convert, inspect_path, read_scan, select_series

__all__ = [
    "read_scan",
    "inspect_path",
    "select_series",
    "convert",
    "ScanIndex",
    "SeriesInfo",
    "Unreadable",
    "LoadScan",
    "LoadScand",
]


def __getattr__(name: str) -> Any:
    if name in ("LoadScan", "LoadScand"):
        from medtl.io import monai as _monai

        value = getattr(_monai, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medtl.io' has no attribute {name!r}")
