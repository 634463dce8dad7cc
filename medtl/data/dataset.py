"""Datasets of preprocessed samples: one per scan (2D, 3D) or one per slice (2.5D), with caching.

The deterministic part of a :class:`~medtl.transforms.Pipeline` runs once per scan and is cached (MONAI
``CacheDataset`` in memory, or on disk in a folder shared by every run with the same preprocessing:
:class:`medtl.data.loading.DiskCache`), so epochs after the first do not decode DICOM again. The random part
(augmentation) and the normalisation run each time a sample is drawn. Every sample carries ``scan``, the index of
its scan, so predictions of the slices of one scan can be averaged into a per-scan prediction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, Randomizable, Transform
from torch.utils.data import Dataset

from medtl.data.loading import DiskCache, fill_threads, resolve_cache
from medtl.errors import DataLoadError, TrainingError, unwrap_load_error

__all__ = [
    "SampleDataset",
    "SegmentationDataset",
    "cached_stage",
    "slice_indices",
    "stamp",
    "transform_random_states",
    "restore_random_states",
]

log = logging.getLogger(__name__)


def stamp(path: str | os.PathLike[str]) -> str:
    """Size and modification time of a file or folder: part of the disk cache key, so edited scans are re-read."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}-{st.st_mtime_ns}"


def slice_indices(depth: int, n: int | None, margin: float = 0.0) -> list[int]:
    """Evenly spaced slice indices of a volume of ``depth`` slices, skipping ``margin`` at both ends."""
    lo = int(np.floor(depth * margin))
    hi = max(lo + 1, depth - lo)
    if n is None or n >= hi - lo:
        return list(range(lo, hi))
    return [int(round(v)) for v in np.linspace(lo, hi - 1, n)]


def random_transforms(transform: Any) -> list[Any]:
    """Every random transform inside ``transform`` with its own generator (Compose, guards, dict twins such as
    RandFlipd's RandFlip), in a fixed order: what checkpoints save and :func:`transform_random_states` puts back."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if depth > 8 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        children = list(getattr(obj, "transforms", None) or ())
        for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
            children += [c for c in (value if isinstance(value, list | tuple) else (value,)) if _is_transform(c)]
        for child in children:
            walk(child, depth + 1)

    walk(transform, 0)
    return found


def _is_transform(obj: Any) -> bool:
    return isinstance(obj, Transform | Randomizable | Compose)


def transform_random_states(transform: Any) -> list[tuple[Any, dict[str, Any]]]:
    """The generator state of every random transform inside ``transform`` (see :func:`random_transforms`).

    With :func:`restore_random_states`, a caller can draw samples and then put augmentation back where it was.
    """
    return [(t.R, t.R.get_state(legacy=False)) for t in random_transforms(transform)]


def restore_random_states(states: list[tuple[Any, dict[str, Any]]]) -> None:
    """Put back the states :func:`transform_random_states` returned."""
    for rng, state in states:
        rng.set_state(state)


def cached_stage(
    items: list[dict[str, Any]],
    pre: Any,
    *,
    cache: str,
    mode: str,
    cache_dir: str | os.PathLike[str] | None,
    num_workers: int | str,
) -> tuple[Any, str]:
    """The items through ``pre``, cached as ``cache`` says (``auto``: see :func:`~medtl.data.loading.resolve_cache`).

    The memory and disk caches are filled here, ``num_workers`` threads at a time (``auto``: the run's cores), so an
    unreadable scan fails the dataset's creation, not a training epoch.

    Returns:
        ``(dataset of pre-processed items, the cache used)``.
    """
    asked = cache
    cache = resolve_cache(cache, mode, has_dir=cache_dir is not None)
    threads = fill_threads(num_workers)
    if cache == "disk":
        if cache_dir is None:
            raise TrainingError("cache 'disk' needs a cache folder")
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if asked != "auto":
                raise TrainingError(
                    f"cannot make the disk cache folder {cache_dir} ({exc.strerror or exc})",
                    path=str(cache_dir),
                    fix="set MEDTL_HOME to a folder you can write, or train.cache: memory",
                ) from None
            log.warning("cannot make the disk cache folder %s (%s); caching in memory", cache_dir, exc)
            cache = "memory"
    try:
        if cache == "memory":
            return CacheDataset(items, transform=pre, progress=False, num_workers=threads, copy_cache=False), cache
        if cache == "disk":
            base = DiskCache(items, pre, cache_dir)  # type: ignore[arg-type]
            base.fill(threads)
            return base, cache
        return MonaiDataset(items, transform=pre), cache
    except Exception as exc:  # noqa: BLE001
        raise unwrap_load_error(exc) from None


class SampleDataset(Dataset):
    """Samples for training or evaluation: ``{"image": tensor, "label": int, "scan": int}``.

    Args:
        records: manifest record dicts (``image``, ``label``, optional ``series``, ``row``...).
        pipeline: the experiment's :class:`~medtl.transforms.Pipeline`.
        train: apply the training (augmenting) post-transforms.
        cache: ``memory``, ``disk``, ``none`` or ``auto`` (disk for volumes when ``cache_dir`` is given, else
            memory). 2.5D always caches volumes (in memory when ``none``).
        cache_dir: folder of the disk cache (:func:`medtl.data.loading.preprocessing_cache_dir`).
        slices_per_scan, slice_margin, neighbor_slices: 2.5D options.
        num_workers: threads that fill the cache (``train.num_workers``; ``auto``: the run's cores).
        seed: seed of the random transforms.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        pipeline: Any,
        *,
        train: bool,
        cache: str = "memory",
        cache_dir: str | os.PathLike[str] | None = None,
        slices_per_scan: int | None = None,
        slice_margin: float = 0.0,
        neighbor_slices: bool = True,
        num_workers: int | str = 0,
        seed: int = 0,
    ) -> None:
        self.records = [dict(r) for r in records]
        self.pipeline = pipeline
        self.train = train
        self.mode = pipeline.mode
        self.neighbor_slices = neighbor_slices
        self.display_layout = pipeline.description.get("orientation") == "RAS"
        self.post = pipeline.post_train if train else pipeline.post_eval
        if train:
            self.post.set_random_state(seed=seed)
        items = []
        for i, r in enumerate(self.records):
            item = {
                "image": str(r["image"]),
                "_path": str(r["image"]),
                "row": r.get("row"),
                "_stamp": stamp(r["image"]),
            }
            if r.get("series") not in (None, ""):
                item["series"] = r["series"]
            item["_index"] = i
            items.append(item)
        if self.mode == "2.5d" and cache == "none":
            cache = "memory"
        self.base: Any
        self.base, self.cache = cached_stage(
            items, pipeline.pre, cache=cache, mode=self.mode, cache_dir=cache_dir, num_workers=num_workers
        )
        # (scan index, slice index or None)
        self.index: list[tuple[int, int | None]] = []
        if self.mode == "2.5d":
            for i in range(len(items)):
                try:
                    depth = int(self.base[i]["image"].shape[-1])
                except Exception as exc:  # noqa: BLE001
                    raise unwrap_load_error(exc) from None
                for k in slice_indices(depth, slices_per_scan, slice_margin):
                    self.index.append((i, k))
        else:
            self.index = [(i, None) for i in range(len(items))]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> list[int]:
        """The label of each sample (each slice in 2.5D)."""
        return [int(self.records[i]["label"]) for i, _ in self.index]

    @property
    def scan_labels(self) -> list[int]:
        return [int(r["label"]) for r in self.records]

    def _slice(self, vol: torch.Tensor, k: int) -> torch.Tensor:
        depth = vol.shape[-1]
        if self.neighbor_slices:
            ks = [min(max(k + d, 0), depth - 1) for d in (-1, 0, 1)]
            img = torch.stack([vol[0, ..., j] for j in ks], dim=0)
        else:
            img = vol[..., k]
        # (C, x, y) -> (C, row, column): 2D networks, and ImageNet's weights, expect rows first. In a volume
        # reoriented to RAS this also puts anterior at the top and the patient's right on the left, as displayed.
        # a copy, never a view: the normalisation works in place and must not touch the cached volume
        return (
            torch.flip(img.transpose(-1, -2), dims=(-2, -1)) if self.display_layout else img.transpose(-1, -2).clone()
        )

    def __getitem__(self, idx: int) -> dict[str, Any]:
        try:
            return self._get(idx)
        except Exception as exc:  # noqa: BLE001
            err = unwrap_load_error(exc)
            if err is exc:
                raise
            raise err from None

    def _get(self, idx: int) -> dict[str, Any]:
        scan, k = self.index[idx]
        d = self.base[scan]
        img = d["image"]
        if not isinstance(img, torch.Tensor):
            img = torch.as_tensor(np.asarray(img))
        img = self._slice(img, k) if k is not None else img.clone()
        rec = self.records[scan]
        out = self.post({"image": img, "_path": rec["image"], "row": rec.get("row")})
        image = out["image"]
        if not torch.isfinite(image).all():
            raise DataLoadError(
                f"scan {rec['image']} (manifest row {rec.get('row')}) gives non-finite values after preprocessing",
                path=str(rec["image"]),
                fix="check the file, or its intensity range",
            )
        return {"image": image.as_subclass(torch.Tensor), "label": int(rec["label"]), "scan": scan}


class SegmentationDataset(Dataset):
    """Image + mask samples: ``{"image", "mask", "spacing", "scan"}``; a training scan gives a list of patches.

    The deterministic stage (reading, checks, resampling) is cached as for :class:`SampleDataset`.

    Args:
        records: manifest record dicts with ``image`` and ``mask`` (absolute paths).
        pipeline: from :func:`medtl.transforms.segmentation.build_segmentation_pipeline`.
        train: draw patches and augment.
        cache, cache_dir, num_workers, seed: as for :class:`SampleDataset`.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        pipeline: Any,
        *,
        train: bool,
        cache: str = "memory",
        cache_dir: str | os.PathLike[str] | None = None,
        num_workers: int | str = 0,
        seed: int = 0,
    ) -> None:
        self.records = [dict(r) for r in records]
        self.pipeline = pipeline
        self.train = train
        self.mode = pipeline.mode
        self.post = pipeline.post_train if train else pipeline.post_eval
        if train:
            self.post.set_random_state(seed=seed)
        items = []
        for i, r in enumerate(self.records):
            item = {
                "image": str(r["image"]),
                "mask": str(r["mask"]),
                "_path": str(r["image"]),
                "_mask_path": str(r["mask"]),
                "row": r.get("row"),
                "_stamp": f"{stamp(r['image'])}/{stamp(r['mask'])}",
                "_index": i,
            }
            if r.get("series") not in (None, ""):
                item["series"] = r["series"]
            items.append(item)
        self.base: Any
        self.base, self.cache = cached_stage(
            items, pipeline.pre, cache=cache, mode=self.mode, cache_dir=cache_dir, num_workers=num_workers
        )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [int(r.get("label", 0)) for r in self.records]

    scan_labels = labels

    def __getitem__(self, idx: int) -> dict[str, Any] | list[dict[str, Any]]:
        try:
            d = self.base[idx]
            rec = self.records[idx]
            sample = {k: v for k, v in d.items() if k in ("mask_fg", "mask_bg")}
            sample |= {
                "image": d["image"].clone(),
                "mask": d["mask"].clone(),
                "_path": rec["image"],
                "row": rec.get("row"),
            }
            out = self.post(sample)
        except Exception as exc:  # noqa: BLE001
            err = unwrap_load_error(exc)
            if err is exc:
                raise
            raise err from None
        spacing = d["spacing"]
        samples = [
            {
                "image": o["image"].as_subclass(torch.Tensor),
                "mask": o["mask"].as_subclass(torch.Tensor),
                "spacing": spacing,
                "scan": idx,
            }
            for o in (out if isinstance(out, list) else [out])
        ]
        if not torch.isfinite(samples[0]["image"]).all():
            raise DataLoadError(
                f"scan {rec['image']} (manifest row {rec.get('row')}) gives non-finite values after preprocessing",
                path=str(rec["image"]),
                fix="check the file, or its intensity range",
            )
        return samples if isinstance(out, list) else samples[0]
