"""Inference: data loaders, per-scan scores of a dataset, and the records of files or manifests to score."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medtl.data.dataset import SampleDataset
from medtl.errors import NoImagesError

__all__ = ["make_loader", "cache_note", "predict_dataset", "records_from_inputs", "inference_device"]


def make_loader(
    dataset: SampleDataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int | str = 0,
    sampler: Any = None,
    pin_memory: bool | None = None,
    on_gpu: bool | None = None,
    processes: int = 1,
) -> torch.utils.data.DataLoader:
    """A MONAI DataLoader (it seeds each worker's random transforms).

    Args:
        dataset: the samples.
        batch_size: samples per batch.
        train: shuffle, and drop a last incomplete batch.
        num_workers: worker processes, or ``auto`` (:func:`~medtl.data.loading.resolve_num_workers`: on a GPU the
            run's cores minus one, at most 8; on the CPU none). Workers live as long as the loader.
        sampler: a sampler instead of shuffling (class balance).
        pin_memory: page-locked batches for asynchronous copies to the GPU (default: ``on_gpu``).
        on_gpu: the batches go to a CUDA GPU (default: whether one is available).
        processes: training processes of the run on this machine (DDP devices), which share its cores.
    """
    from monai.data import DataLoader

    from medtl.data.loading import resolve_num_workers

    gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    workers = resolve_num_workers(num_workers, cuda=gpu, processes=processes)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        drop_last=train and len(dataset) > batch_size,
        persistent_workers=workers > 0,
        pin_memory=gpu if pin_memory is None else pin_memory,
    )


def cache_note(config: Any, records: list[dict[str, Any]]) -> str:
    """One line saying where the runs of a comparison keep their preprocessed scans (``train.cache``; ``auto``
    resolved by the mode, read from the first scan when ``data.mode`` is ``auto``).

    Args:
        config: the experiment config.
        records: the manifest's records (the first is read when the cache and the mode are both ``auto``).
    """
    from medtl.data.loading import resolve_cache
    from medtl.utils import medtl_home

    cache, mode = config.train.cache, config.data.mode
    if cache == "auto" and mode == "auto" and records:
        from medtl.errors import MedtlError
        from medtl.train.experiment import read_scan_info

        try:
            mode = "2d" if read_scan_info(records[0]).dims == 2 else "3d"
        except MedtlError:  # the runs will say what is wrong with the scan
            return "preprocessed scans: train.cache auto (disk for volumes, memory for 2D images)"
    used = resolve_cache(cache, mode)
    why = f"train.cache {cache}"
    if cache == "auto":
        why += ", 2D images" if mode == "2d" else f", {mode.upper()} volumes"
    if used == "disk":
        return (
            f"preprocessed scans: disk cache ({why}) in {medtl_home() / 'cache'}, made once and read by every run of "
            "this comparison (train.cache: memory keeps them in each run's memory instead)"
        )
    if used == "memory":
        return (
            f"preprocessed scans: memory cache ({why}), each run preprocesses every scan once "
            "(train.cache: disk shares one copy among the runs)"
        )
    return f"preprocessed scans: no cache ({why}), every scan is preprocessed each time it is drawn"


def inference_device(device: str | None = None) -> torch.device:
    """``device``, else CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: SampleDataset,
    task: Any,
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    precision: str = "32-true",
    num_workers: int | str = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-scan scores of ``dataset`` (slice scores averaged in 2.5D), as the task defines them.

    Returns:
        ``(scores (n_scans, C), targets (n_scans,), scan_ids (n_scans,))``.

    Raises:
        TrainingError: the model gives non-finite outputs (NaN weights, overflow).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    batch_size = task.eval_batch_size or batch_size
    loader = make_loader(
        dataset, batch_size=batch_size, train=False, num_workers=num_workers, on_gpu=device.type == "cuda"
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if device.type == "cuda" and precision.startswith("bf16")
        else contextlib.nullcontext()
    )
    scores, targets, scans = [], [], []
    with autocast:
        for batch in loader:
            moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            s, t, ids, _ = task.evaluate_batch(model, moved)
            scores.append(s.cpu())
            targets.append(t.cpu())
            scans.append(ids.cpu())
    if not scores:
        return torch.zeros(0, task.num_outputs), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return task.per_scan(torch.cat(scores), torch.cat(targets), torch.cat(scans))


def records_from_inputs(
    inputs: list[str | Path], read_manifest: Callable[[Path], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], bool]:
    """Records of what ``predict`` (any task) was given: scan files, folders and manifest CSVs.

    A scan file is one unlabelled record. A folder is indexed like ``medtl index`` (:func:`medtl.data.index.index_tree`,
    headers only): one record per DICOM series (a series in its own folder is that folder; several series in one
    folder are told apart by their SeriesInstanceUID) and one per NIfTI file or single-file image, so a folder that is
    one series stays one scan and a folder of patients gives every scan. Files under a folder that are not scans are
    left out with a warning naming how many and the first. A manifest CSV keeps its labels.

    Args:
        inputs: scans, folders or manifest CSVs.
        read_manifest: reads a manifest into records with the run's targets (classification and the other tasks
            with one row per scan: :meth:`~medtl.tasks.base.Task.read_labelled`; segmentation: its unlabelled rows).

    Returns:
        ``(records, labelled)``; ``labelled`` is False as soon as one input is not a manifest.

    Raises:
        NoImagesError: an input does not exist, or a folder holds no scan medtl can read.
    """
    records: list[dict[str, Any]] = []
    labelled = True
    for inp in inputs:
        p = Path(inp)
        if p.suffix.lower() == ".csv":
            records += read_manifest(p)
            continue
        if not p.exists():
            raise NoImagesError(f"input {p} does not exist", path=str(p), fix="check the path")
        labelled = False
        if p.is_dir():
            records += _folder_records(p)
        else:
            records.append(_scan_record(p.resolve()))
    return records, labelled


def _scan_record(image: Path, series: str | None = None) -> dict[str, Any]:
    """An unlabelled record of one scan (no manifest row: errors name the scan)."""
    return {"image": str(image), "series": series or "", "label": 0, "patient_id": "", "row": None}


def _folder_records(folder: Path) -> list[dict[str, Any]]:
    """One record per scan found under ``folder`` (see :func:`records_from_inputs`)."""
    from medtl.data.index import index_tree

    try:
        found = index_tree(folder)
    except NoImagesError as exc:
        text = str(exc)
        if exc.fix:
            text = text.removesuffix(f"; {exc.fix}")
        raise NoImagesError(
            f"input folder: {text}", path=str(folder), fix="give the folder that holds the scans, or the scan files"
        ) from None
    if found.unreadable:
        first = found.unreadable[0]
        warnings.warn(
            f"{folder}: {len(found.unreadable)} file(s) are not scans medtl can read and were left out "
            f"(first: {first.path}: {first.reason})",
            stacklevel=3,
        )
    return [_scan_record(Path(r["image"]), r.get("series")) for r in found.rows]
