"""An on-disk cache of DICOM headers, keyed by path, size and modification time (or status-change time, if later).

``medtl index`` and ``medtl inspect`` read every header of a tree; the second time a tree is indexed, the
headers of files whose size and modification time have not changed come from this cache instead of the files.
It is one SQLite file in ``$MEDTL_HOME/cache`` holding, per file, the fields medtl reads (the patient ID only as
its keyed pseudonym, descriptions scrubbed) or the reason the file could not be read. Pseudonyms depend on the
installation's secret, so the cache forgets everything when the secret changes. Set ``MEDTL_INDEX_CACHE=0`` to
turn it off; a cache that cannot be opened or written (read-only MEDTL_HOME, a full disk, a corrupt file) is
skipped with a debug message, never an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from medtl.io.dicom.header import DicomHeader, FrameGeometry
from medtl.utils import hash_patient_id, medtl_home

__all__ = ["HeaderCache", "open_header_cache", "CACHE_ENV"]

logger = logging.getLogger("medtl.io")

CACHE_ENV = "MEDTL_INDEX_CACHE"
_SCHEMA = 4  # 4: descriptions scrubbed of the birth date in every written form (entries of 3 may hold it)
_FILE = f"dicom-headers-v{_SCHEMA}.sqlite"
_TUPLES = ("ipp", "iop", "pixel_spacing")


_FIELDS = [f.name for f in dataclasses.fields(DicomHeader)]
_FRAME_FIELDS = [f.name for f in dataclasses.fields(FrameGeometry)]


_VALUES = operator.attrgetter(*_FIELDS)
_FRAMES_AT = _FIELDS.index("frames")
_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call


def _encode(value: DicomHeader | str) -> str:
    """One JSON list of the header's field values in declaration order (the path is the key), or the reason."""
    if isinstance(value, str):
        return json.dumps({"bad": value})
    values = list(_VALUES(value))
    values[0] = None  # path
    if value.frames is not None:
        values[_FRAMES_AT] = [[getattr(f, n) for n in _FRAME_FIELDS] for f in value.frames]
    return _JSON.encode(values)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _decode(text: str, path: Path) -> DicomHeader | str:
    data = json.loads(text)
    if isinstance(data, dict):
        return str(data["bad"])
    h = dict(zip(_FIELDS, data, strict=True))
    h["path"] = path
    for key in _TUPLES:
        h[key] = _tuple(h[key])
    if h["frames"] is not None:
        frames = []
        for values in h["frames"]:
            f = dict(zip(_FRAME_FIELDS, values, strict=True))
            for key in _TUPLES:
                f[key] = _tuple(f[key])
            frames.append(FrameGeometry(**f))
        h["frames"] = frames
    return DicomHeader(**h)


class HeaderCache:
    """Headers (or reasons a file could not be read) by path, valid while size and mtime are unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS headers (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, data TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            key_id = hash_patient_id("medtl-header-cache")  # changes with the pseudonym secret
            row = db.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchone()
            if row is None or row[0] != key_id:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM headers")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('key_id', ?)", (key_id,))
                db.execute("COMMIT")
            if self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
            self._db = db
        return self._db

    def lookup(self, files: Sequence[tuple[Path, int, int]], root: Path | None = None) -> dict[str, DicomHeader | str]:
        """The cached entries (by ``os.fspath`` of the path) of ``files`` (path, size, mtime_ns) whose size and
        mtime match.

        Args:
            files: the files, with their size and mtime in nanoseconds.
            root: a folder holding all of them (one range query instead of one per file).
        """
        if not files or (self._db is None and not self.path.exists()):
            return {}  # nothing cached yet: the file is created when the headers are stored
        try:
            db = self._connect()
            wanted = {os.fspath(p): (p, size, mtime) for p, size, mtime in files}
            found: dict[str, DicomHeader | str] = {}
            if root is not None:
                prefix = os.path.join(os.fspath(root), "")
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                rows: Iterable[Any] = db.execute(
                    "SELECT path, size, mtime, data FROM headers WHERE path >= ? AND path < ?", (prefix, upper)
                )
            else:
                keys = list(wanted)
                rows = []
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows.extend(
                        db.execute(f"SELECT path, size, mtime, data FROM headers WHERE path IN ({marks})", chunk)
                    )
            for key, size, mtime, data in rows:
                entry = wanted.get(key)
                if entry is not None and entry[1] == size and entry[2] == mtime:
                    found[key] = _decode(data, entry[0])
            return found
        except (sqlite3.Error, OSError, ValueError, TypeError, KeyError) as exc:
            logger.debug("header cache %s not used: %s", self.path, exc)
            return {}

    def store(self, entries: Sequence[tuple[Path, int, int, DicomHeader | str]]) -> None:
        """Remember headers (or reasons) of files with their size and mtime_ns."""
        if not entries:
            return
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?)",
                [(os.fspath(p), size, mtime, _encode(value)) for p, size, mtime, value in entries],
            )
            db.execute("COMMIT")
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            logger.debug("header cache %s not written: %s", self.path, exc)
            try:
                if self._db is not None and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_header_cache() -> HeaderCache | None:
    """The header cache in ``$MEDTL_HOME/cache``, or None when ``MEDTL_INDEX_CACHE=0``."""
    if os.environ.get(CACHE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    return HeaderCache(medtl_home() / "cache" / _FILE)
