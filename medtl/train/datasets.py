"""The datasets of an experiment: which dataset class, the mask paths of segmentation manifests, class balance.

Split from :mod:`medtl.train.experiment`, which builds them once per experiment; :func:`make_dataset` and
:func:`class_balance` are also what ``lr_find`` and inference use.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtl.data.dataset import SampleDataset, SegmentationDataset
from medtl.errors import ManifestError
from medtl.utils import medtl_home

if TYPE_CHECKING:
    from medtl.train.experiment import Experiment

__all__ = ["make_dataset", "PatientSegmentationDataset", "attach_masks", "class_weights", "class_balance"]


def make_dataset(
    exp: Experiment, records: list[dict[str, Any]], *, train: bool, cache: str | None = None
) -> SampleDataset | SegmentationDataset:
    cfg = exp.config
    if cfg.segmentation is not None:
        return PatientSegmentationDataset(
            records,
            exp.pipeline,
            train=train,
            cache=cache or cfg.train.cache,
            cache_dir=medtl_home() / "cache" / cfg.transform_key(),
            num_workers=cfg.train.num_workers,
            seed=cfg.train.seed,
        )
    return SampleDataset(
        records,
        exp.pipeline,
        train=train,
        cache=cache or cfg.train.cache,
        cache_dir=medtl_home() / "cache" / cfg.transform_key(),
        slices_per_scan=cfg.data.slices_per_scan,
        slice_margin=cfg.data.slice_margin,
        neighbor_slices=cfg.data.neighbor_slices,
        num_workers=cfg.train.num_workers,
        seed=cfg.train.seed,
    )


class PatientSegmentationDataset(SegmentationDataset):
    """A :class:`~medtl.data.dataset.SegmentationDataset` whose samples also hold ``patient``: the index of the
    scan's patient among the dataset's patients (sorted pseudonyms), from which
    :class:`~medtl.train.segmentation.SegmentationTask` computes its per-patient means."""

    def __init__(self, records: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        super().__init__(records, *args, **kwargs)
        ids = sorted({str(r.get("patient_id", "")) for r in self.records})
        index = {p: i for i, p in enumerate(ids)}
        self.patient_index = [index[str(r.get("patient_id", ""))] for r in self.records]

    def __getitem__(self, idx: int) -> dict[str, Any] | list[dict[str, Any]]:
        out = super().__getitem__(idx)
        for sample in out if isinstance(out, list) else [out]:
            sample.setdefault("patient", self.patient_index[idx])
        return out


def attach_masks(records: list[dict[str, Any]], manifest: Path, column: str) -> None:
    """Give each record an absolute ``mask`` path from the manifest's mask column (relative paths: to the CSV).

    Raises:
        ManifestError: the column is missing, a cell is empty, or a mask file does not exist (rows named).
    """
    base = manifest.resolve().parent
    missing_col = [r["row"] for r in records if column not in r]
    if missing_col:
        raise ManifestError(
            f"manifest {manifest} has no {column!r} column; a segmentation manifest names each scan's label map",
            path=str(manifest),
            fix=f"add a {column!r} column (label-map NIfTI or DICOM SEG paths relative to the CSV) "
            "or set segmentation.mask_column",
        )
    problems = []
    for r in records:
        cell = str(r.get(column) or "").strip()
        if not cell:
            problems.append(f"row {r.get('row')}: empty {column!r}")
            continue
        p = Path(cell).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.exists():
            problems.append(f"row {r.get('row')}: mask {p} does not exist")
        r["mask"] = str(p)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ManifestError(
            f"manifest {manifest}: " + "; ".join(problems[:5]) + more,
            path=str(manifest),
            fix="give every row an existing mask file",
        )


def class_weights(labels: list[int], n_classes: int) -> list[float]:
    """Inverse-frequency loss weights: ``n / (n_classes * count)`` per class."""
    counts = Counter(labels)
    n = len(labels)
    return [n / (n_classes * max(counts.get(c, 0), 1)) for c in range(n_classes)]


def class_balance(exp: Experiment) -> torch.utils.data.Sampler | None:
    """The training sampler ``train.class_balance`` asks for (``sampler``: inverse-frequency draws).

    In segmentation the frequencies are those of the manifest's labels (the split's strata); a manifest without
    labels has one, so the draws are uniform.
    """
    if exp.config.train.class_balance != "sampler":
        return None
    labels = exp.datasets["train"].labels
    counts = Counter(labels)
    per_sample = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    gen = torch.Generator().manual_seed(exp.config.train.seed)
    return torch.utils.data.WeightedRandomSampler(per_sample, num_samples=len(labels), replacement=True, generator=gen)
