"""DICOM reading: header-only indexing, grouping by series, sorting along the normal, decoding.

The modules, in the order a scan goes through them:

- :mod:`~medtl.io.dicom.tagscan`: the raw tag scan, the few header elements medtl needs read from the bytes;
- :mod:`~medtl.io.dicom.header`: the :class:`DicomHeader` record, built from the raw scan or from pydicom;
- :mod:`~medtl.io.dicom.files`: reading headers from files, one or many (in a process pool);
- :mod:`~medtl.io.dicom.series`: grouping by series, checking and sorting slices, assembling the image;
- :mod:`~medtl.io.dicom.pixels`: decoding pixel data and converting it to physical units.
"""

from __future__ import annotations

from medtl.io.dicom.files import read_header, read_headers
from medtl.io.dicom.header import DicomHeader, FrameGeometry, scrub_text
from medtl.io.dicom.series import (
    DicomImage,
    group_series,
    header_geometry,
    io_workers,
    read_dicom_file,
    read_series,
    series_kind,
)

__all__ = [
    "DicomHeader",
    "FrameGeometry",
    "DicomImage",
    "read_header",
    "read_headers",
    "scrub_text",
    "group_series",
    "series_kind",
    "read_series",
    "read_dicom_file",
    "header_geometry",
    "io_workers",
]
