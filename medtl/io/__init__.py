"""Reading scans: DICOM series, single and multi-frame DICOM files, and NIfTI, as MONAI ``MetaTensor``s.

``read_scan`` returns one scan, channel first, in physical units (CT in Hounsfield units), with a RAS
affine built from the DICOM geometry; ``inspect_path`` lists the series under a path from headers only;
``convert`` writes a series as NIfTI; ``LoadScan`` / ``LoadScand`` start a MONAI pipeline.
"""

from __future__ import annotations

from medtl.io.monai import LoadScan, LoadScand
from medtl.io.scan import ScanIndex, SeriesInfo, Unreadable, convert, inspect_path, read_scan

__all__ = ["read_scan", "inspect_path", "convert", "ScanIndex", "SeriesInfo", "Unreadable", "LoadScan", "LoadScand"]
