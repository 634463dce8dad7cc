"""Refusing, before allocating, a read that needs more memory than the machine has (DICOM and NIfTI alike)."""

from __future__ import annotations

import os

from medtl.errors import UnsupportedScanError

__all__ = ["available_memory", "ensure_memory"]


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable on Linux); None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def ensure_memory(n_bytes: int, what: str, path: str | os.PathLike[str]) -> None:
    """Refuse, before allocating, to read something that needs more memory than the machine has.

    Raises:
        UnsupportedScanError: ``n_bytes`` is more than the memory available.
    """
    free = available_memory()
    if free is not None and n_bytes > free:
        raise UnsupportedScanError(
            f"{path}: {what} needs {n_bytes / 2**30:,.1f} GiB of memory to read; {free / 2**30:,.1f} GiB are free",
            path=str(path),
            fix="check the header (a corrupt size?), or read it on a machine with more memory",
        )
