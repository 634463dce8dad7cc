"""Is the weight file about to be loaded the one its source published, or the one that entered the cache?

:func:`check_weight_file` hashes the file actually loaded (cheaply: :func:`~medtl.weights.cache.sha256_file`
remembers hashes) and refuses one that differs from its source's pinned SHA-256 (or torchvision's hash prefix), or
from the hash recorded next to it when it was cached. An encoder pretrained here (``local:<name>``) is checked
against the SHA-256 its record holds, every time it is loaded. Files of sources that publish no hash (MedicalNet on
Hugging Face, a user's checkpoint) are "unverified". :func:`verify_cache` re-reads every cached file for
``medtl weights verify`` and reports ``local:`` records that cannot be read as ``broken``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medtl.errors import HashMismatchError
from medtl.weights.cache import _base_source, _check_hash, cache_listing, import_command, sha256_file
from medtl.weights.local import RECORD_FILE, broken_local_sources, changed_encoder_error, local_weights_dir
from medtl.weights.sources import WeightSource, get_weight_source

__all__ = ["FileCheck", "check_weight_file", "VerifyResult", "verify_cache"]


def _recorded_hash(path: Path) -> str | None:
    """The SHA-256 stored next to a cached file when it entered the cache."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None
    words = sidecar.read_text().split()
    return words[0] if words else None


@dataclass(frozen=True)
class FileCheck:
    """The SHA-256 of a weight file as it is loaded, and what it was verified against.

    Attributes:
        path: the file.
        sha256: its SHA-256, computed from the file itself.
        verified: whether it matches a hash published for the source (the full SHA-256, or torchvision's prefix).
        verification: one line saying against what it was checked, or why it is "unverified".
    """

    path: Path
    sha256: str
    verified: bool
    verification: str


def _refetch_hint(source: WeightSource, arch: str) -> str:
    return f"get it again: `medtl weights pull {source.name}:{arch} --force`, or `{import_command(source, arch)}`"


def check_weight_file(source: WeightSource | str, arch: str, path: str | os.PathLike[str]) -> FileCheck:
    """Hash the weight file about to be loaded and check it against its source.

    Raises:
        HashMismatchError: the file differs from its source's pinned hash, from the hash recorded when it
            entered the cache, or (a ``local:`` encoder) from the hash in its record; the message gives the fix.
    """
    source = get_weight_source(source)
    path = Path(path)
    digest = sha256_file(path)
    if source.path is not None:
        # a checkpoint file has no file record; an encoder pretrained here has one, holding its recorded SHA-256
        recorded = next((f.sha256 for f in source.files if f.sha256), None)
        if recorded is None:
            return FileCheck(path, digest, False, "unverified: a checkpoint file, no published hash to compare")
        if digest != recorded:
            raise changed_encoder_error(source.name, path, digest, recorded)
        return FileCheck(path, digest, True, f"SHA-256 recorded when {source.name} was registered")
    base = _base_source(source)
    f = base.file_for(arch)
    if f.pin is not None:
        try:
            _check_hash(path, f, digest)
        except HashMismatchError as exc:
            raise HashMismatchError(
                f"refusing {path}: it has SHA-256 {digest}, but {base.name}:{arch} is pinned to "
                f"{f.sha256 or f.sha256_prefix + '...'}; the cached file was changed or corrupted after it was "
                f"downloaded or imported; {_refetch_hint(base, arch)}",
                path=str(path),
            ) from exc
        if f.pin == "sha256":
            return FileCheck(path, digest, True, f"SHA-256 pinned by the {base.name} source")
        return FileCheck(path, digest, True, f"SHA-256 prefix {f.sha256_prefix} from torchvision's file name")
    recorded = _recorded_hash(path)
    if recorded is not None and recorded != digest:
        raise HashMismatchError(
            f"refusing {path}: it has SHA-256 {digest}, but it had {recorded} when it entered the cache; the file "
            f"was changed or corrupted since; {_refetch_hint(base, arch)}",
            path=str(path),
        )
    if recorded is None:
        return FileCheck(path, digest, False, f"unverified: {base.name} publishes no hash, none recorded at caching")
    return FileCheck(path, digest, False, f"unverified: {base.name} publishes no hash; unchanged since it was cached")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of re-hashing one cached file.

    Attributes:
        status: ``ok`` (equal to the pinned hash, or to the one recorded when cached), ``mismatch``,
            ``unrecorded`` (nothing to compare with), or ``broken`` (a ``local:`` record that cannot be read; the
            detail says why, ``arch`` is empty).
        verified: whether the hash compared with is one the source publishes; ``False`` means "unverified".
        detail: the hashes.
    """

    source: str
    arch: str
    path: Path
    status: str
    verified: bool
    detail: str

    def to_dict(self) -> dict:
        return {"source": self.source, "arch": self.arch, "path": str(self.path), "status": self.status,
                "verified": self.verified, "detail": self.detail}  # fmt: skip


def verify_cache() -> list[VerifyResult]:
    """Re-read and re-hash every cached file (no remembered hashes) against its pinned or recorded SHA-256; then a
    ``broken`` result for each ``local:`` encoder whose record cannot be read."""
    results = []
    for entry in cache_listing():
        if not entry.cached:
            continue
        f = get_weight_source(entry.source).file_for(entry.arch)
        digest = sha256_file(entry.path, use_memo=False)
        if f.pin is not None:
            try:
                _check_hash(entry.path, f, digest)
                status, detail = "ok", f"sha256 {digest} ({f.pin} pinned by the source)"
            except HashMismatchError:
                status, detail = "mismatch", f"sha256 {digest}, expected {f.sha256 or f.sha256_prefix + '...'}"
        else:
            recorded = _recorded_hash(entry.path)
            if recorded is None:
                status, detail = "unrecorded", f"sha256 {digest}; unverified: no published or recorded hash"
            elif recorded == digest:
                status, detail = "ok", f"sha256 {digest}; unverified: no published hash, unchanged since cached"
            else:
                status, detail = "mismatch", f"sha256 {digest}, expected {recorded} (recorded when cached)"
        results.append(VerifyResult(entry.source, entry.arch, entry.path, status, f.pin is not None, detail))
    for name, exc in broken_local_sources():
        record = local_weights_dir() / name.split(":", 1)[1] / RECORD_FILE
        results.append(VerifyResult(name, "", record, "broken", False, str(exc)))
    return results
