"""Small helpers shared across medtl."""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from medtl.errors import UnknownOptionError

__all__ = ["look_up_option", "hash_patient_id", "atomic_write_bytes", "medtl_home"]


def look_up_option(value: str, allowed: Iterable[str], *, what: str = "option") -> str:
    """Return ``value`` if allowed, else raise an error listing the allowed values and the closest match."""
    allowed = list(allowed)
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownOptionError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}.{hint}")


def hash_patient_id(patient_id: str | None) -> str:
    """One-way pseudonym for a PatientID: the same ID always gives the same 16-hex-digit string.

    Raw patient identity never appears in logs, reports or run directories. A site may set
    ``MEDTL_ID_SALT`` so pseudonyms cannot be matched across sites.
    """
    if patient_id is None or str(patient_id).strip() == "":
        return ""
    salt = os.environ.get("MEDTL_ID_SALT", "medtl")
    return hashlib.sha256(f"{salt}:{str(patient_id).strip()}".encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def medtl_home() -> Path:
    """medtl's cache folder: ``$MEDTL_HOME``, else ``~/.cache/medtl``."""
    return Path(os.environ.get("MEDTL_HOME", Path.home() / ".cache" / "medtl")).expanduser()
