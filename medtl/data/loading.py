"""What keeps a training loop fed: the shared disk cache of preprocessed scans, its key, and worker counts.

* **The preprocessing cache** (``train.cache: disk``, and ``auto`` for volumes): the output of a pipeline's
  deterministic ``pre`` stage, one file per scan, in ``$MEDTL_HOME/cache/pre-<key>/``. The folder's key
  (:func:`preprocessing_key`) hashes what ``pre`` does and nothing else: the input record without what only the
  ``post`` stage uses (the model's channels and the weights' normalisation), the ``preprocess`` section without its
  ``normalization``, the pipeline version and a task's own ``pre`` options (segmentation's classes). A file's name
  hashes the scan it was made from (path, series, mask, size and modification time), not the manifest row or the
  scan's place in a split. So every run of a comparison (arms with other weights, seeds, label fractions) and every
  later run with the same preprocessing reads the same files, and each scan is preprocessed once.
* **Writes are atomic** (:class:`DiskCache`): each file is written under a temporary name in the cache folder itself
  and renamed into place, so parallel runs (``compare --parallel``, DDP ranks) never read a half-written file.
  MONAI's ``PersistentDataset`` writes in the system's temporary folder and moves the file; where that folder is
  on another file system (a tmpfs ``/tmp``, a cluster's local scratch) the move is a copy into the final name, which
  another process can read half-written: ``torch.load`` then fails with "failed finding central directory" and
  MONAI raises it. Runs filling one cache at once share the work: a scan another process is preprocessing is
  waited for, not made twice.
* **Workers** (``train.num_workers: auto``, :func:`resolve_num_workers`): on a GPU the cores this run may use minus
  one for the training loop, at most 8 (the cores are shared among parallel compare runs and the DDP processes of
  this machine, as torch's threads are); on the CPU none, since workers would take the cores the model computes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import PersistentDataset
from monai.utils import convert_to_tensor

__all__ = [
    "PARALLEL_ENV",
    "MAX_AUTO_WORKERS",
    "DiskCache",
    "cache_item_key",
    "cores_per_run",
    "fill_threads",
    "preprocessing_key",
    "preprocessing_cache_dir",
    "resolve_cache",
    "resolve_num_workers",
]

log = logging.getLogger(__name__)

#: runs trained at once on this machine (set by compare for each run it launches)
PARALLEL_ENV = "MEDTL_PARALLEL_RUNS"
#: ``num_workers: auto`` never starts more workers than this (more rarely helps and each holds batches in memory)
MAX_AUTO_WORKERS = 8
#: keys of a dataset item that name the scan a cache file is made from
_ITEM_KEYS = ("image", "mask", "series", "_stamp")
#: keys of a dataset item that ``pre`` turns into data (the others are bookkeeping and are not stored)
_DATA_KEYS = ("image", "mask")
#: input record fields only the ``post`` stage uses
_POST_RECORD_FIELDS = ("in_channels", "normalization")


# --------------------------------------------------------------------------------------------- cores and workers


def cores_per_run(processes: int = 1) -> int:
    """The cores one process of this run may use: the cores of this process's affinity, divided among the parallel
    compare runs (``MEDTL_PARALLEL_RUNS``) and the ``processes`` each run starts on this machine (DDP ranks)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        parallel = max(1, int(os.environ.get(PARALLEL_ENV, "1") or 1))
    except ValueError:
        parallel = 1
    return max(1, cores // parallel // max(1, processes))


def resolve_num_workers(value: int | str, *, cuda: bool, processes: int = 1) -> int:
    """DataLoader worker processes for ``train.num_workers``.

    Args:
        value: a count, or ``auto``.
        cuda: the model trains on a CUDA GPU.
        processes: training processes of this run on this machine (DDP devices per node).

    Returns:
        ``value`` when it is a count; for ``auto``: on a GPU ``min(cores - 1, 8)`` of :func:`cores_per_run` (one core
        is left to the process that drives the GPU); on the CPU 0 (workers would compete with the model's threads).
    """
    if value != "auto":
        return int(value)
    if not cuda:
        return 0
    return max(0, min(cores_per_run(processes) - 1, MAX_AUTO_WORKERS))


def fill_threads(value: int | str) -> int:
    """Threads that fill a cache when a dataset is made: ``num_workers`` (at least 1) for a count, the cores of this
    run for ``auto`` (filling comes before training, so it competes with nothing)."""
    return cores_per_run() if value == "auto" else max(1, int(value))


def resolve_cache(cache: str, mode: str, *, has_dir: bool = True) -> str:
    """``train.cache`` resolved: ``auto`` is ``disk`` for volumes (``3d``, ``2.5d``; shared by runs and processes,
    not bounded by memory) and ``memory`` for 2D images (small; re-reading them is cheap); ``memory`` where no disk
    folder is given."""
    if cache != "auto":
        return cache
    return "disk" if mode in ("3d", "2.5d") and has_dir else "memory"


# --------------------------------------------------------------------------------------------- keys


def cache_item_key(item: dict[str, Any]) -> bytes:
    """The name of an item's cache file: a hash of the scan (path, series, mask, size and modification time) and
    nothing of the row or split it came from (``hash_func`` of :class:`DiskCache`)."""
    named = {k: item[k] for k in _ITEM_KEYS if item.get(k) not in (None, "")}
    return hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest().encode()


def preprocessing_key(config: Any, record: Any, extras: dict[str, Any] | None = None) -> str:
    """Hash of what a pipeline's ``pre`` stage does: the folder name of its disk cache (``pre-<16 hex>``).

    Args:
        config: the experiment config (its ``preprocess`` section; ``normalization`` is left out, the ``post``
            stage applies it).
        record: the pipeline's input record (``pipeline.record``, with its size) or its dict; the model's
            ``in_channels`` and the weights' ``normalization`` are left out (``post`` adapts channels and
            normalises), so arms with other weights share the cache.
        extras: a task's own options that change ``pre`` (segmentation: its classes, which read the masks).
    """
    from medtl.config.sections import PIPELINE_VERSION

    rec = dict(record.to_dict() if hasattr(record, "to_dict") else record)
    for name in _POST_RECORD_FIELDS:
        rec.pop(name, None)
    pre = config.preprocess.model_dump(mode="json")
    pre.pop("normalization", None)
    blob = {"record": rec, "preprocess": pre, "pipeline_version": PIPELINE_VERSION, "extras": extras or {}}
    return "pre-" + hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preprocessing_cache_dir(experiment: Any, extras: dict[str, Any] | None = None) -> Path:
    """``$MEDTL_HOME/cache/pre-<key>``: the disk cache of an experiment's pipeline (see :func:`preprocessing_key`)."""
    from medtl.utils import medtl_home

    return medtl_home() / "cache" / preprocessing_key(experiment.config, experiment.pipeline.record, extras)


# --------------------------------------------------------------------------------------------- the disk cache


def _whole(path: Path) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file: it exists and ends with a zip archive's end record (a file cut
    short does not), found without reading the file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-22, os.SEEK_END)
            return fh.read(4) == b"PK\x05\x06"
    except OSError:
        return False


@contextlib.contextmanager
def _claim(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the lock of cache file ``path`` (a ``.lock`` file beside it): True when held, False when another process
    holds it and ``wait`` is False. Where locks are not available (no ``fcntl``), always True."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: every process makes what it misses
        yield True
        return
    lock = path.with_name(f".{path.stem}.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:  # a folder that cannot be written: nothing to share, the file is made here
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            # removed while held: a process that opened it before waits on the old file and then finds the entry;
            # one that opens it after makes a new lock file and finds the entry too
            with contextlib.suppress(OSError):
                lock.unlink()
    finally:
        os.close(fd)


class DiskCache(PersistentDataset):
    """MONAI's ``PersistentDataset`` with files named by scan (:func:`cache_item_key`), written atomically in the
    cache folder, shared by processes, and read back whole or made again.

    A file holds only what ``pre`` made (the image, the mask and what a task's ``pre`` adds), not the item's
    bookkeeping (manifest row, paths): those come from the item that asks for it. An unreadable file (a disk error,
    a copy cut short by an older writer) is made again. When the folder cannot be written (full, read-only) the
    scans are preprocessed each time they are drawn, with one warning.

    Args:
        data: dataset items (``image``, optional ``mask``, ``series``, ``_stamp`` and bookkeeping keys).
        transform: the pipeline's ``pre`` stage.
        cache_dir: the cache folder (:func:`preprocessing_cache_dir`).
    """

    def __init__(self, data: Sequence[dict[str, Any]], transform: Any, cache_dir: str | os.PathLike[str]) -> None:
        super().__init__(data, transform=transform, cache_dir=cache_dir, hash_func=cache_item_key)
        self._warned = False

    def path_of(self, item: dict[str, Any]) -> Path:
        """The cache file of ``item``."""
        return Path(str(self.cache_dir)) / f"{self.hash_func(item).decode()}.pt"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return torch.load(path, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is made again
            log.warning(
                "disk cache file %s is unreadable (%s: %s); preprocessing the scan again", path, type(exc).__name__, exc
            )
            return None

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            torch.save(convert_to_tensor(data, convert_numeric=False, track_meta=False), tmp)
            os.replace(tmp, path)  # atomic within one folder: a reader sees the old file, the new one or none
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot write the disk cache in %s (%s); scans are preprocessed each time they are drawn "
                    "(free space there, set MEDTL_HOME, or train.cache: memory)",
                    path.parent,
                    exc,
                )

    def _cachecheck(self, item_transformed: dict[str, Any]) -> dict[str, Any]:
        path = self.path_of(item_transformed)
        cached = self._read(path) if _whole(path) else None
        if cached is not None:
            return {**item_transformed, **cached}
        out = self._pre_transform(deepcopy(item_transformed))
        if isinstance(out, dict):
            self._write(path, {k: v for k, v in out.items() if k not in item_transformed or k in _DATA_KEYS})
        return out

    def fill(self, threads: int = 1) -> int:
        """Make every missing file now (``threads`` at a time), sharing the work with other processes filling the
        same folder; errors of ``pre`` (an unreadable scan) are raised here, before training.

        Returns:
            The number of files this process made.
        """
        missing = [item for item in self.data if not _whole(self.path_of(item))]
        made = 0
        lock = threading.Lock()

        def make(item: dict[str, Any], wait: bool) -> dict[str, Any] | None:
            nonlocal made
            path = self.path_of(item)
            with _claim(path, wait=wait) as held:
                if not held:
                    return item  # another process is making it: come back to it at the end
                if not _whole(path):  # (else made meanwhile by another process)
                    self._cachecheck(item)
                    with lock:
                        made += 1
            return None

        if threads > 1 and len(missing) > 1:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="medtl-cache") as pool:
                later = [i for i in pool.map(lambda it: make(it, False), missing) if i is not None]
        else:
            later = [i for i in (make(it, False) for it in missing) if i is not None]
        for item in later:
            make(item, True)
        return made
