"""``SegmentationTask``: the :class:`~medtl.train.task.Task` of voxel-wise segmentation.

Training draws patches (3D) or whole images (2D) and uses a MONAI loss (DiceCE by default). Validation and test
run MONAI's ``sliding_window_inference`` over each whole (preprocessed) scan and compute, per scan and per
foreground class, with MONAI's metric functions on the preprocessed grid (distances in mm from its voxel size):

* ``dice``: Dice coefficient;
* ``hd95``: 95th percentile of the symmetric Hausdorff distance, mm;
* ``surface_dice``: normalised surface Dice at ``segmentation.surface_tolerance_mm``.

Empty masks are handled explicitly: when a class is absent from both the reference and the prediction, Dice and
surface Dice are 1 and HD95 is 0 (a correct "nothing here"); when it is absent from only one of them, Dice and
surface Dice are 0 and HD95 is undefined (NaN, left out of the means and counted in ``hd95_undefined``).

The engine sees one row per scan: the per-class metrics as "scores", written to ``predictions_<split>.csv``
through :class:`~medtl.train.rundir.RunDir`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["SegmentationTask", "segmentation_metrics", "make_segmentation_loss", "sliding_window", "segment_scans"]

SEG_METRICS = ("dice", "hd95", "surface_dice")


class _CrossEntropy(nn.Module):
    """Cross-entropy on a ``(B, 1, ...)`` label map, like MONAI's losses take it."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target[:, 0].long())


def make_segmentation_loss(kind: str) -> nn.Module:
    """MONAI's DiceCE / Dice / DiceFocal loss (softmax, one-hot target), or cross-entropy."""
    from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

    if kind == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if kind == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if kind == "dice_focal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True)
    return _CrossEntropy()


def sliding_window(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """MONAI ``sliding_window_inference`` of ``predictor`` over ``image`` ``(B, C, *spatial)``."""
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(
        image, list(roi_size), sw_batch_size, predictor, overlap=overlap, mode=blend, progress=False
    )
    return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else torch.as_tensor(out)


def segmentation_metrics(
    pred: torch.Tensor, mask: torch.Tensor, num_classes: int, spacing: Sequence[float], tolerance_mm: float
) -> np.ndarray:
    """Per-class Dice, HD95 (mm) and surface Dice of one scan, foreground classes only.

    Args:
        pred, mask: label maps ``(1, *spatial)`` (or ``(*spatial)``).
        num_classes: classes, the background included.
        spacing: voxel size in mm per axis.
        tolerance_mm: surface Dice tolerance.

    Returns:
        ``(3, num_classes - 1)``: rows dice, hd95, surface_dice (empty-mask conventions in the module docstring).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
    from monai.networks.utils import one_hot

    p = pred.reshape(1, 1, *pred.shape[-len(spacing) :]).long()
    m = mask.reshape(1, 1, *mask.shape[-len(spacing) :]).long()
    po, mo = one_hot(p, num_classes), one_hot(m, num_classes)
    spacing = [float(s) for s in spacing]
    out = np.full((3, num_classes - 1), np.nan)
    with warnings.catch_warnings():  # MONAI warns for every empty class; the conventions below decide instead
        warnings.simplefilter("ignore")
        dice = compute_dice(po, mo, include_background=False, ignore_empty=False)[0]
        hd = compute_hausdorff_distance(po, mo, include_background=False, percentile=95, spacing=spacing)[0]
        nsd = compute_surface_dice(
            po, mo, [tolerance_mm] * (num_classes - 1), include_background=False, spacing=spacing
        )[0]
    for c in range(num_classes - 1):
        in_p, in_m = bool(po[0, c + 1].any()), bool(mo[0, c + 1].any())
        if not in_p and not in_m:
            out[:, c] = (1.0, 0.0, 1.0)
        elif in_p != in_m:
            out[:, c] = (0.0, np.nan, 0.0)
        else:
            out[:, c] = (float(dice[c]), float(hd[c]), float(nsd[c]))
    return out


@dataclass
class SegmentationTask:
    """One label per voxel, from a list of classes (index 0: the background).

    Args:
        classes: class names in label-value order.
        loss: ``dice_ce``, ``dice``, ``dice_focal`` or ``ce``.
        roi_size: sliding-window size (the training patch size; 2D: the image size).
        overlap, blend: sliding-window overlap and blending (``gaussian`` or ``constant``).
        tolerance_mm: surface Dice tolerance.
        spatial_dims: 2 or 3.
    """

    classes: list[str]
    loss: str = "dice_ce"
    roi_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    overlap: float = 0.25
    blend: str = "gaussian"
    tolerance_mm: float = 1.0
    spatial_dims: int = 3
    name: str = "segmentation"

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def foreground(self) -> list[str]:
        return list(self.classes[1:])

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", *SEG_METRICS)

    @property
    def eval_batch_size(self) -> int | None:
        """Whole volumes differ in size: one per batch in 3D (2D images share the resized size)."""
        return 1 if self.spatial_dims == 3 else None

    def make_loss(self) -> nn.Module:
        return make_segmentation_loss(self.loss)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["mask"]

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(1)

    def infer(self, predictor: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Logits of whole scans by sliding window (a window the size of the training patch)."""
        return sliding_window(predictor, image, self.roi_size, overlap=self.overlap, blend=self.blend)

    @torch.no_grad()
    def evaluate_batch(
        self, predictor: Callable[[torch.Tensor], torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-scan rows of a batch of whole scans: ``(metrics (B, 3*(K-1)), zeros (B,), scans (B,), losses (B,))``."""
        image, mask = batch["image"], batch["mask"]
        logits = self.infer(predictor, image).float()
        if not torch.isfinite(logits).all():
            from medtl.errors import TrainingError

            raise TrainingError(
                "the model gives non-finite outputs (NaN or inf)",
                fix="check the weights (a checkpoint of NaNs) or train with a lower learning rate",
            )
        loss_fn = self.make_loss()
        pred = logits.argmax(1, keepdim=True)
        rows, losses = [], []
        spacing = batch.get("spacing")
        for b in range(image.shape[0]):
            losses.append(float(loss_fn(logits[b : b + 1], mask[b : b + 1])))
            sp = spacing[b].tolist() if spacing is not None else [1.0] * self.spatial_dims
            m = segmentation_metrics(pred[b].cpu(), mask[b].cpu(), self.num_outputs, sp, self.tolerance_mm)
            rows.append(m.reshape(-1))
        scores = torch.as_tensor(np.stack(rows), dtype=torch.float64)
        scans = torch.as_tensor(batch["scan"]).reshape(-1)
        return scores, torch.zeros(len(rows), dtype=torch.long), scans, torch.tensor(losses, dtype=torch.float64)

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss_fn = self.make_loss()
        return torch.stack([loss_fn(outputs[b : b + 1], targets[b : b + 1]) for b in range(outputs.shape[0])])

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row per scan already (whole-scan inference); sorted by scan, duplicates of DDP padding dropped."""
        order = torch.argsort(scans, stable=True)
        scores, targets, scans = scores[order], targets[order], scans[order]
        keep = torch.ones(len(scans), dtype=torch.bool)
        keep[1:] = scans[1:] != scans[:-1]
        return scores[keep], targets[keep], scans[keep]

    def _table(self, scores: torch.Tensor) -> np.ndarray:
        k = self.num_outputs - 1
        return scores.double().numpy().reshape(-1, 3, k)

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Means over scans: ``dice``, ``hd95``, ``surface_dice`` (averaged over foreground classes) and per class."""
        t = self._table(scores)
        out: dict[str, Any] = {"n": int(t.shape[0])}
        if t.shape[0] == 0:
            return out | {m: math.nan for m in SEG_METRICS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: mean undefined
            per_class = np.nanmean(t, axis=0)  # (3, K-1)
        for i, name in enumerate(SEG_METRICS):
            vals = per_class[i]
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            for c, cls in enumerate(self.foreground):
                out[f"{name}_{cls}"] = float(vals[c])
        out["hd95_undefined"] = int(np.isnan(t[:, 1, :]).sum())
        return out

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        return float(metrics[key])

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        return ["image", "mask", "patient_id", "dice"] + [f"{m}_{c}" for m in SEG_METRICS for c in self.foreground]

    def prediction_rows(
        self,
        records: Sequence[dict[str, Any]],
        scores: torch.Tensor,
        scan_ids: torch.Tensor,
        *,
        with_labels: bool,
    ) -> list[dict[str, Any]]:
        t = self._table(scores)
        rows = []
        for table, sid in zip(t, scan_ids.tolist(), strict=True):
            r = records[sid]
            row: dict[str, Any] = {
                "image": str(r["image"]),
                "mask": str(r.get("mask", "")),
                "patient_id": r.get("patient_id", ""),
                "dice": float(np.mean(table[0])),
            }
            for i, m in enumerate(SEG_METRICS):
                row |= {f"{m}_{c}": float(v) for c, v in zip(self.foreground, table[i], strict=True)}
            rows.append(row)
        return rows

    def write_extras(self, run: Any, model: nn.Module, dataset: Any, records: Sequence[dict[str, Any]]) -> None:
        """Nothing yet besides the predictions."""


def _mask_name(image: str, used: set[str]) -> str:
    p = Path(image)
    lower = p.name.lower()
    if lower.endswith((".nii.gz", ".nii")):
        stem = p.name[: -len(".nii.gz")] if lower.endswith(".gz") else p.name[: -len(".nii")]
    else:
        stem = p.stem if p.is_file() else p.name
    name, i = f"{stem}_mask.nii.gz", 1
    while name in used:
        name, i = f"{stem}_{i}_mask.nii.gz", i + 1
    used.add(name)
    return name


def _affine_4x4(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    out = np.eye(4)  # a 2D image's (3, 3) affine: rows and columns in x, y; one slice in z
    out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
    return out


@torch.no_grad()
def segment_scans(
    model: nn.Module,
    task: SegmentationTask,
    transforms: Any,
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Segment scans and write one NIfTI label map per scan on the scan's own grid and affine.

    Each scan goes through the run's preprocessing (``transforms``, from
    :func:`medtl.transforms.segmentation.build_inference_transforms`), a sliding-window prediction, and MONAI
    ``Invertd`` (nearest neighbour), which undoes padding, resizing, resampling and reorientation, so the mask's
    voxels are the input's voxels.

    Returns:
        One row per scan: ``image``, ``mask_file`` and the voxel count of each class.
    """
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from medtl.errors import DataLoadError

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model = model.to(device).eval()
    invert = Invertd(keys="pred", transform=transforms, orig_keys="image", nearest_interp=True, to_tensor=True)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for r in records:
        item = {"image": str(r["image"])} | ({"series": r["series"]} if r.get("series") else {})
        try:
            d = transforms(item)
        except DataLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing scan is reported with its path
            from medtl.transforms.checks import unwrap_load_error

            err = unwrap_load_error(exc)
            if err is not exc:
                raise err from None
            raise DataLoadError(f"cannot preprocess {r['image']}: {exc}", path=str(r["image"])) from exc
        img = d["image"]
        logits = task.infer(model, img.as_tensor()[None].float().to(device))
        label = logits.argmax(1).cpu().to(torch.float32)
        d["pred"] = MetaTensor(label, meta=dict(img.meta))  # the meta holds the affine
        inverted = invert(d)["pred"]
        data = np.rint(np.asarray(inverted[0])).astype(np.uint8)
        if data.ndim == 2:
            data = data[..., None]
        name = _mask_name(str(r["image"]), used)
        nifti = nib.Nifti1Image(data, _affine_4x4(inverted.affine))
        nifti.header.set_xyzt_units("mm")
        nifti.set_qform(nifti.affine, code=1)
        nib.save(nifti, str(out / name))
        counts = np.bincount(data.ravel(), minlength=task.num_outputs)
        rows.append(
            {"image": str(r["image"]), "mask_file": str(out / name)}
            | {f"voxels_{c}": int(n) for c, n in zip(task.classes, counts, strict=False)}
        )
    return rows
