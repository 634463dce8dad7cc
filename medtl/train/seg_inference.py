"""Segmentation runs on whole scans, on each scan's own grid: predicted label maps (``predict``) and their scores
against reference masks (``evaluate``).

:func:`native_label_maps` runs the run's inference preprocessing, a sliding window and MONAI ``Invertd``;
:func:`segment_scans` writes the maps as NIfTI; :func:`native_scores` scores them against the reference masks,
placed on the scan's grid as training places them (:class:`~medtl.transforms.segmentation.LoadMaskd`,
:func:`~medtl.transforms.segmentation.check_mask`), with the scan's own voxel size for the distances.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.io.dicom_seg import _affine_4x4
from medtl.tasks.segmentation import SegmentationTask, segmentation_metrics

__all__ = ["mask_names", "native_label_maps", "native_scores", "native_split_scores", "segment_scans"]


def mask_names(images: Sequence[str]) -> list[str]:
    """The file name of each image's predicted mask, ``<stem>_mask.nii.gz`` (the stem: a NIfTI file's name without
    ``.nii(.gz)``, another file's stem, a folder's name).

    Two images of one stem (from two folders) would write one file: the later ones get ``<stem>_1_mask.nii.gz``,
    ``<stem>_2_mask.nii.gz``... Names are compared with case ignored, since ``A_mask.nii.gz`` and ``a_mask.nii.gz``
    are one file on macOS and Windows.
    """
    names: list[str] = []
    used: set[str] = set()
    for image in images:
        p = Path(image)
        lower = p.name.lower()
        if lower.endswith((".nii.gz", ".nii")):
            stem = p.name[: -len(".nii.gz")] if lower.endswith(".gz") else p.name[: -len(".nii")]
        else:
            stem = p.stem if p.is_file() else p.name
        name, i = f"{stem}_mask.nii.gz", 1
        while name.lower() in used:
            name, i = f"{stem}_{i}_mask.nii.gz", i + 1
        used.add(name.lower())
        names.append(name)
    return names


@torch.no_grad()
def native_label_maps(
    model: nn.Module,
    task: SegmentationTask,
    transforms: Any,
    records: Sequence[dict[str, Any]],
    *,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Each record's predicted label map on the scan's own grid and affine.

    Each scan goes through the run's preprocessing (``transforms``, from
    :func:`medtl.transforms.segmentation.build_inference_transforms`), a sliding-window prediction, and MONAI
    ``Invertd`` (nearest neighbour), which undoes padding, resizing, resampling and reorientation, so the map's
    voxels are the input's voxels.

    Yields:
        ``(record, label map)``: a ``MetaTensor`` ``(1, *spatial)`` of class indices (float32) with the scan's affine
        and the scan's metadata.
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from medtl.transforms.checks import Guard

    device = torch.device(device)
    model = model.to(device).eval()
    invert = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=True, to_tensor=True)
    # a failing scan is one DataLoadError naming it (and its manifest row) with the real cause ("is not a DICOM
    # file", "is truncated"), as in training and classification, not MONAI's "applying transform <object>" wrapper
    preprocess = Guard(transforms, "preprocessing")
    for r in records:
        item = {"image": str(r["image"])} | ({"series": r["series"]} if r.get("series") else {})
        if r.get("row") not in (None, ""):
            item["row"] = r["row"]
        d = preprocess(item)
        img = d["image"]
        logits = task.infer(model, img.as_tensor()[None].float().to(device))
        if not torch.isfinite(logits).all():  # argmax would turn NaN into a confident-looking mask
            from medtl.errors import TrainingError

            raise TrainingError(
                f"the model gives non-finite outputs (NaN or inf) on {r['image']}",
                fix="check the weights (a checkpoint of NaNs) or train with a lower learning rate",
            )
        label = logits.argmax(1).cpu().to(torch.float32)
        d["pred"] = MetaTensor(label, meta=dict(img.meta))  # the meta holds the affine
        yield r, invert(d)["pred"]


def segment_scans(
    model: nn.Module,
    task: SegmentationTask,
    transforms: Any,
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Segment scans and write one NIfTI label map per scan on the scan's own grid and affine
    (:func:`native_label_maps`).

    Args:
        names: the file name of each record's mask in ``out_dir`` (default :func:`mask_names`).

    Returns:
        One row per scan: ``image``, ``mask_file`` and the voxel count of each class.
    """
    import gzip

    import nibabel as nib

    from medtl.utils import atomic_write_bytes

    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    names = list(names) if names is not None else mask_names([str(r["image"]) for r in records])
    for (r, inverted), name in zip(
        native_label_maps(model, task, transforms, records, device=device), names, strict=True
    ):
        data = np.rint(np.asarray(inverted[0])).astype(np.uint8)
        if data.ndim == 2:
            data = data[..., None]
        nifti = nib.Nifti1Image(data, _affine_4x4(inverted.affine))
        nifti.header.set_xyzt_units("mm")
        nifti.set_qform(nifti.affine, code=1)
        # written whole or not at all (the folder is made with the first mask): an interrupted or failing predict
        # leaves no half-written file
        atomic_write_bytes(out / name, gzip.compress(nifti.to_bytes(), compresslevel=6, mtime=0))
        counts = np.bincount(data.ravel(), minlength=task.num_outputs)
        rows.append(
            {"image": str(r["image"]), "mask_file": str(out / name)}
            | {f"voxels_{c}": int(n) for c, n in zip(task.classes, counts, strict=False)}
        )
    return rows


def native_scores(
    model: nn.Module,
    task: SegmentationTask,
    transforms: Any,
    records: Sequence[dict[str, Any]],
    *,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Per-scan metric rows (as :meth:`SegmentationTask.evaluate_batch` gives them) of the predicted label maps on
    each scan's own grid, against the records' ``mask`` files, with distances in the scan's own voxel size.

    Raises:
        DataLoadError: a reference mask that does not lie on its scan's grid or holds unknown label values.
    """
    from monai.transforms import Compose

    from medtl.transforms.checks import KEY, ExpectScand, Guard
    from medtl.transforms.segmentation import MASK, CheckMaskd, LoadMaskd

    classes = list(task.classes)
    rows = []
    for r, pred in native_label_maps(model, task, transforms, records, device=device):
        dims = pred.ndim - 1
        # the reference as training reads it: a label map or a DICOM SEG, a one-slice volume as a 2D image
        reference = Guard(
            Compose([LoadMaskd(classes), ExpectScand(MASK, dims=dims, channels=1), CheckMaskd(classes)]),
            "reading its reference mask",
        )
        d = {KEY: pred, MASK: str(r[MASK]), "_path": str(r["image"]), "_mask_path": str(r[MASK]), "row": r.get("row")}
        mask = reference(d)[MASK]
        affine = np.asarray(pred.affine, dtype=np.float64)
        spacing = np.linalg.norm(affine[:dims, :dims], axis=0).tolist()
        table = segmentation_metrics(
            torch.as_tensor(pred), torch.as_tensor(mask), task.num_outputs, spacing, task.tolerance_mm
        )
        rows.append(table.reshape(-1))
    k = 3 * (task.num_outputs - 1)
    return torch.as_tensor(np.stack(rows) if rows else np.zeros((0, k)), dtype=torch.float64)


def native_split_scores(
    model: nn.Module,
    task: SegmentationTask,
    transforms: Any,
    records: Sequence[dict[str, Any]],
    *,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`native_scores` of ``records`` as the engine gives a split's rows: ``(scores, targets, scan ids)``,
    each scan's target the index of its patient among the records' sorted patient IDs (for per-patient means)."""
    scores = native_scores(model, task, transforms, records, device=device)
    pids = sorted({str(r.get("patient_id", "")) for r in records})
    index = {p: i for i, p in enumerate(pids)}
    targets = torch.tensor([index[str(r.get("patient_id", ""))] for r in records], dtype=torch.long)
    return scores, targets, torch.arange(len(records))
