"""Reading scans: DICOM series, single and multi-frame DICOM files, and NIfTI, as MONAI ``MetaTensor``s.

``read_scan`` returns one scan, channel first, in physical units (CT in Hounsfield units), with a RAS
affine built from the DICOM geometry; ``inspect_path`` lists the series under a path from headers only;
``convert`` writes a series as NIfTI; ``LoadScan`` / ``LoadScand`` start a MONAI pipeline.

MONAI and torch are imported only when a scan is read or a transform is built, so listing a tree
(``medtl inspect``) starts quickly.

Modules: ``scan`` (read_scan, select_series), ``scan_index`` (inspect_path: what a path holds, from headers),
``output`` (convert, output-path checks), ``load_transforms`` (LoadScan, LoadScand), ``dicom/`` (headers, series
assembly, pixel decoding), ``nifti``, ``geometry`` (slice spacing, affines, orientation), ``index_cache`` (the
on-disk header cache), ``memory`` (refusing reads larger than memory), ``dicom_seg`` and ``dicom_seg_write``
(DICOM SEG in and out, with highdicom).
"""

from __future__ import annotations

from typing import Any

from medtl.io.output import convert
from medtl.io.scan import read_scan, select_series
from medtl.io.scan_index import ScanIndex, SeriesInfo, Unreadable, inspect_path

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
        from medtl.io import load_transforms

        value = getattr(load_transforms, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medtl.io' has no attribute {name!r}")
