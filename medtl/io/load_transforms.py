"""The MONAI transforms that start a pipeline by reading a scan with :func:`medtl.io.read_scan`: ``LoadScan``
and its dictionary twin ``LoadScand``.

This is the only module of :mod:`medtl.io` that imports MONAI at import time; :mod:`medtl.io` loads it when one
of the two names is first asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from medtl.io.scan import read_scan

__all__ = ["LoadScan", "LoadScand"]


def _series_value(value: Any) -> str | None:
    """A manifest's series cell: empty, None or NaN mean "no choice"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


class LoadScan(Transform):
    """Read a path (DICOM file or folder, NIfTI) into a channel-first ``MetaTensor`` with :func:`read_scan`.

    Args:
        series: default series (UID or description) for folders holding several.
        volume: volume index for 4D NIfTI files.
        allow_irregular: resample irregular slice spacing instead of raising.
    """

    def __init__(self, series: str | None = None, *, volume: int | None = None, allow_irregular: bool = False) -> None:
        self.series = series
        self.volume = volume
        self.allow_irregular = allow_irregular

    def __call__(self, path: str | os.PathLike[str], series: str | None = None) -> Any:
        return read_scan(
            path,
            _series_value(series) or self.series,
            volume=self.volume,
            allow_irregular=self.allow_irregular,
        )


class LoadScand(MapTransform):
    """Dictionary version of :class:`LoadScan`: replaces each ``d[key]`` (a path) by the scan it names.

    Args:
        keys: keys holding paths.
        series_key: key holding the series to read (UID or description) when present and not empty;
            ``None`` ignores it.
        allow_missing_keys: do not fail when a key is absent.
        volume: volume index for 4D NIfTI files.
        allow_irregular: resample irregular slice spacing instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        series_key: str | None = "series",
        allow_missing_keys: bool = False,
        *,
        volume: int | None = None,
        allow_irregular: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_key = series_key
        self.loader = LoadScan(volume=volume, allow_irregular=allow_irregular)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        series = _series_value(d.get(self.series_key)) if self.series_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], series)
        return d
