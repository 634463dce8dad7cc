"""The unlabeled pool: scans from a one-column manifest or a folder, preprocessed as in training, cached, viewed.

Preprocessing is training's own (:func:`medtl.transforms.presets.build_pipeline`): medtl's readers, orientation,
spacing, the modality's intensity handling and resizing, cached once per scan (MONAI ``PersistentDataset`` on
disk by default, so an archive larger than memory works, or ``CacheDataset`` in memory). Views are drawn from
the cached scan each time a sample is taken.

A pool is refused as a whole, listing every bad row, when rows are missing (:func:`read_pool`) or, for a 3D encoder,
when scans are not volumes of several slices (:func:`check_volumes`): a one-slice volume stretched to a 3D crop
would teach the encoder nothing about depth.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medtl.errors import ManifestError, TrainingError, unwrap_load_error
from medtl.pretraining.config import PretrainConfig
from medtl.utils import hash_patient_id

__all__ = ["ScanPool", "read_pool", "check_volumes", "build_preprocessing", "PoolDataset", "LabelledDataset"]


@dataclass
class ScanPool:
    """The unlabeled scans.

    Attributes:
        records: one dict per scan: ``image`` (absolute path), ``series`` (or None), ``row`` (CSV row or index).
        n_patients: distinct patients (manifest ``patient_id``, else DICOM PatientID, else one per NIfTI file).
        manifest_sha256: SHA-256 of the manifest file, or of the index written for a folder.
        index_csv: for a folder, the index (``image`` relative to the folder, ``series``) as CSV bytes.
        source: the manifest or folder.
    """

    records: list[dict[str, Any]]
    n_patients: int
    manifest_sha256: str
    index_csv: bytes | None
    source: Path


def _patient_key(record: dict[str, Any]) -> str:
    from medtl.data.manifest_csv import is_nifti, nifti_stem, read_dicom_patient_id

    if record.get("patient_id"):
        return hash_patient_id(record["patient_id"])
    image = Path(record["image"])
    pid = None if is_nifti(image) else read_dicom_patient_id(image, record.get("series"))
    return hash_patient_id(pid) if pid else f"file:{nifti_stem(image) if is_nifti(image) else image}"


def _from_manifest(path: Path) -> tuple[list[dict[str, Any]], bytes]:
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist", path=str(path), fix="check data.manifest")
    data = path.read_bytes()
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
        raise ManifestError(
            f"manifest {path} has no 'image' column (columns: {', '.join(reader.fieldnames or []) or 'none'})",
            path=str(path),
            fix="name the column of scan paths 'image'",
        )
    records, problems = [], []
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row.get("image"):
            problems.append(f"row {n}: empty image")
            continue
        image = Path(row["image"]).expanduser()
        image = image if image.is_absolute() else (path.parent / image)
        if not image.exists():
            problems.append(f"row {n}: {image} does not exist")
            continue
        records.append(
            {
                "image": str(image.resolve()),
                "series": row.get("series") or None,
                "row": n,
                "patient_id": row.get("patient_id"),
            }
        )
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ManifestError(
            f"manifest {path}: " + "; ".join(problems[:10]) + more, path=str(path), fix="fix or remove these rows"
        )
    return records, data


def _from_folder(folder: Path) -> tuple[list[dict[str, Any]], bytes]:
    from medtl.data import index_tree

    found = index_tree(folder)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["image", "series"])
    records = []
    for n, r in enumerate(found.rows, start=2):
        image = Path(r["image"])
        rel = image.relative_to(found.root).as_posix() if image.is_relative_to(found.root) else str(image)
        w.writerow([rel, r.get("series") or ""])
        records.append({"image": str(image), "series": r.get("series") or None, "row": n})
    return records, out.getvalue().encode()


def read_pool(cfg: PretrainConfig) -> ScanPool:
    """The scans of ``cfg.data`` with their count of patients and the manifest's SHA-256.

    Raises:
        ManifestError: no image column, empty rows or missing files (all listed). NoImagesError: empty folder.
        TrainingError: fewer than two scans.
    """
    if cfg.data.manifest is not None:
        source = Path(cfg.data.manifest).expanduser()
        records, data = _from_manifest(source)
        index_csv = None
    else:
        source = Path(cfg.data.folder).expanduser()  # type: ignore[arg-type]
        records, data = _from_folder(source)
        index_csv = data
    if len(records) < 2:
        raise TrainingError(
            f"{source} holds {len(records)} scan(s); self-supervised pretraining needs at least two (and hundreds "
            "to be useful)",
            path=str(source),
        )
    patients = {_patient_key(r) for r in records}
    for r in records:
        r.pop("patient_id", None)  # only the count is kept
    return ScanPool(records, len(patients), hashlib.sha256(data).hexdigest(), index_csv, source)


def check_volumes(pool: ScanPool) -> None:
    """Refuse a pool for a 3D encoder when any scan is not a volume of several slices (read from headers only).

    A scan that cannot be read is left to the reader, which names it when the pool is cached.

    Raises:
        ManifestError: listing every row whose scan has one slice (a one-slice NIfTI, a radiograph), with its shape.
    """
    from medtl.errors import MedtlError
    from medtl.io.scan import select_series

    problems = []
    for r in pool.records:
        try:
            info = select_series(r["image"], r.get("series"))
        except MedtlError:
            continue
        if len(info.shape) < 3 or info.n_slices < 2 or min(info.shape[:3]) < 2:
            shape = "x".join(str(n) for n in info.shape) or "?"
            problems.append(f"row {r['row']}: {r['image']} has one slice (shape {shape})")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ManifestError(
            f"{pool.source}: {len(problems)} of {len(pool.records)} scans are not volumes of several slices, which a "
            "3D encoder cannot learn from: " + "; ".join(problems[:10]) + more,
            path=str(pool.source),
            fix="remove them from the pool (a 3D pretraining takes volumes only), or pretrain a 2D encoder on 2D "
            "images (data.mode 2d)",
        )


@dataclass
class Preprocessing:
    """The deterministic, cached part and the final channels/normalisation, with what they were built from.

    Attributes:
        pipeline: training's :class:`~medtl.transforms.presets.Pipeline` for these scans and this encoder.
        source: the resolved starting weights (a :class:`~medtl.weights.sources.WeightSource`).
        modality, mode: resolved from ``auto``.
    """

    pipeline: Any
    source: Any
    modality: str
    mode: str


def build_preprocessing(cfg: PretrainConfig, first_image: str, series: str | None = None) -> Preprocessing:
    """Training's preprocessing for these scans and this encoder (modality and dims read from the first scan).

    Channels and normalisation are decided as training decides them (:func:`medtl.train.experiment.resolve_input`),
    from the starting weights: ImageNet weights see three channels with ImageNet's mean and standard deviation.
    """
    from medtl.train.experiment import read_scan_info, resolve_input_record
    from medtl.transforms.presets import build_pipeline

    scan = read_scan_info({"image": first_image, "series": series, "row": 2})
    source, record = resolve_input_record(cfg, scan)
    pipeline = build_pipeline(cfg, record)  # a pretraining config has no augment section: its views augment
    return Preprocessing(pipeline, source, record.modality, record.mode)


def _cached(items: list[dict[str, Any]], pre: Any, cache: str, cache_dir: Path, num_workers: int) -> Any:
    from monai.data import CacheDataset, PersistentDataset
    from monai.data import Dataset as MonaiDataset

    if cache == "memory":
        try:
            return CacheDataset(items, transform=pre, progress=False, num_workers=max(1, num_workers), copy_cache=False)
        except Exception as exc:  # noqa: BLE001 - the failing scan is named by the Guard inside
            raise unwrap_load_error(exc) from None
    if cache == "disk":
        cache_dir.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform=pre, cache_dir=cache_dir)
    return MonaiDataset(items, transform=pre)


def _items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from medtl.data.dataset import stamp

    items = []
    for r in records:
        item = {"image": str(r["image"]), "_path": str(r["image"]), "row": r.get("row"), "_stamp": stamp(r["image"])}
        if r.get("series"):
            item["series"] = r["series"]
        items.append(item)
    return items


def _image(d: dict[str, Any]) -> torch.Tensor:
    img = d["image"]
    if not isinstance(img, torch.Tensor):
        img = torch.as_tensor(np.asarray(img))
    return img.as_subclass(torch.Tensor) if hasattr(img, "as_subclass") else img


class PoolDataset(Dataset):
    """Views of cached, preprocessed scans: each item is what ``views`` makes of one scan.

    Args:
        records: the pool's records.
        pre: the deterministic preprocessing (a MONAI transform on ``{"image": path}``).
        views: turns a preprocessed scan into a dict of tensors (two views, or a corrupted crop and its target).
        cache: ``disk``, ``memory`` or ``none``. cache_dir: the disk cache's folder. num_workers: cache fill threads.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        pre: Any,
        views: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        *,
        cache: str,
        cache_dir: Path,
        num_workers: int = 0,
    ) -> None:
        self.records = records
        self.views = views
        self.base = _cached(_items(records), pre, cache, cache_dir, num_workers)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        try:
            return self.views(_image(self.base[idx]))
        except Exception as exc:  # noqa: BLE001
            err = unwrap_load_error(exc)
            if err is exc:
                raise
            raise err from None


class LabelledDataset(Dataset):
    """``(image, label)`` pairs of a labelled manifest, preprocessed and normalised (no augmentation), for k-NN."""

    def __init__(self, records: list[dict[str, Any]], pipeline: Any, *, cache_dir: Path) -> None:
        self.records = records
        self.final = pipeline.post_eval
        self.base = _cached(_items(records), pipeline.pre, "memory", cache_dir, 0)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        img = self.final({"image": _image(self.base[idx]).clone()})["image"]
        return torch.as_tensor(img).as_subclass(torch.Tensor).float(), int(self.records[idx]["label"])
