"""Errors medtl raises for bad input.

Every error is a :class:`MedtlError` and also the closest built-in exception, so callers may catch
either ``medtl.errors.SeriesNotFoundError`` or plain ``LookupError``. Messages name the file or value,
what was expected, and the fix; the CLI prints them on one line (set ``MEDTL_DEBUG=1`` for a traceback).
"""

from __future__ import annotations

__all__ = [
    "MedtlError",
    "ScanError",
    "NotDicomError",
    "TruncatedFileError",
    "MissingPixelDataError",
    "UnsupportedScanError",
    "InvalidHeaderError",
    "NoImagesError",
    "SeriesNotFoundError",
    "GeometryError",
    "ManifestError",
    "ConfigError",
    "WeightsError",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "WeightsNotAvailableError",
    "HashMismatchError",
    "UnknownOptionError",
    "DataLoadError",
    "TrainingError",
    "RunDirError",
    "unwrap_load_error",
]


class MedtlError(Exception):
    """Base class of every error medtl raises for bad input or a bad environment."""

    def __init__(self, message: str, *, path: str | None = None, fix: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.fix = fix
        text = message
        if fix and fix not in message:
            text = f"{message}; {fix}"
        super().__init__(text)

    def __str__(self) -> str:  # KeyError-like bases would quote the message otherwise
        return str(self.args[0]) if self.args else ""


class ScanError(MedtlError, ValueError):
    """A scan file or folder cannot be read as asked."""


class NotDicomError(ScanError):
    """The file is neither DICOM nor NIfTI."""


class TruncatedFileError(ScanError):
    """The file ends before its header or pixel data does."""


class MissingPixelDataError(ScanError):
    """A DICOM file has no pixel data (a report, a structured document, a DICOMDIR...)."""


class UnsupportedScanError(ScanError):
    """A readable file whose content medtl cannot turn into an image (unknown encoding, photometric...)."""


class InvalidHeaderError(ScanError):
    """A DICOM header holds a value that breaks its own rules (an integer string "1A", a negative size...)."""


class NoImagesError(MedtlError, FileNotFoundError):
    """A path does not exist, or a folder holds no readable image."""


class SeriesNotFoundError(MedtlError, LookupError):
    """No series in a folder matches the requested UID or description."""


class GeometryError(ScanError):
    """Slices do not form a regular grid: duplicated positions, gaps, uneven spacing, mixed orientations."""


class ManifestError(MedtlError, ValueError):
    """A manifest CSV has problems (all of them are listed in the message, with row numbers)."""


class ConfigError(MedtlError, ValueError):
    """An experiment config is invalid."""


class UnknownOptionError(MedtlError, ValueError):
    """A name (architecture, weight source, option) is not among the allowed ones."""


class WeightsError(MedtlError, RuntimeError):
    """Pretrained weights cannot be found, trusted or loaded."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint would need arbitrary unpickling to load."""


class CheckpointMismatchError(WeightsError):
    """A checkpoint does not fit the architecture (missing backbone keys, wrong shapes)."""


class WeightsNotAvailableError(WeightsError):
    """Weights are not cached and cannot be downloaded."""


class HashMismatchError(WeightsError):
    """A weight file's SHA-256 differs from the recorded one."""


class DataLoadError(MedtlError, RuntimeError):
    """A sample failed to load or transform during training or prediction."""


class TrainingError(MedtlError, RuntimeError):
    """Training cannot start or continue (no training patients for a class, bad resume folder...)."""


class RunDirError(TrainingError):
    """A run folder is missing a file, holds a corrupt one, or is in use by another process."""


def unwrap_load_error(exc: BaseException) -> BaseException:
    """The :class:`DataLoadError` inside MONAI's ``RuntimeError("applying transform ...")`` wrappers, if any (else
    ``exc``): what a failing scan's error says, not the wrapper's "applying transform <object at 0x...>"."""
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, DataLoadError):
            return cur
        cur = cur.__cause__
    return exc
