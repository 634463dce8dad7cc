"""``SegmentationTask``: the :class:`~medtl.train.task.Task` of voxel-wise segmentation.

Training draws patches (3D) or whole images (2D) and uses a MONAI loss (DiceCE by default). Validation runs
MONAI's ``sliding_window_inference`` over each whole (preprocessed) scan and computes, per scan and per foreground
class, with MONAI's metric functions on the preprocessed grid (distances in mm from its voxel size); the final
test scores are computed the same way on each scan's own grid (:mod:`medtl.train.seg_inference`):

* ``dice``: Dice coefficient;
* ``hd95``: 95th percentile of the symmetric Hausdorff distance, mm;
* ``surface_dice``: normalised surface Dice at ``segmentation.surface_tolerance_mm``.

Empty masks are handled explicitly: when a class is absent from both the reference and the prediction, Dice and
surface Dice are 1 and HD95 is 0 (a correct "nothing here"); when it is absent from only one of them, Dice and
surface Dice are 0 and HD95 is undefined (NaN, left out of the means and counted in ``hd95_undefined``).

The engine sees one row per scan: the per-class metrics as "scores", written to ``predictions_<split>.csv``
through :class:`~medtl.train.rundir.RunDir` (columns ``image, mask, patient_id, dice`` and ``<metric>_<class>``).
The per-scan "target" of a row is the index of the scan's patient within its dataset (the ``patient`` of a
sample, which :class:`~medtl.train.experiment.PatientSegmentationDataset` adds; -1 when a dataset gives none).

Metrics of a split (``metrics`` in ``result.json``; ``val_<name>`` per epoch in ``metrics.csv``):

* per scan: ``dice``, ``hd95``, ``surface_dice``: for each foreground class the mean over scans, then the mean
  over classes; ``dice_<class>``, ``hd95_<class>``, ``surface_dice_<class>``: the per-class means over scans;
* per patient: ``dice_patient``, ``hd95_patient``, ``surface_dice_patient``: for each class, the mean over
  patients of each patient's mean over its scans, then the mean over classes (equal to the per-scan means when
  every patient has one scan; a patient with many scans weighs as much as one with a single scan);
  ``<metric>_patient_<class>`` per class and ``n_patients``. Left out when the scans' patients are unknown;
* ``n`` (scans) and ``hd95_undefined`` (scan-class pairs whose HD95 is undefined).

The run's checkpoint is chosen by ``train.monitor``, ``val_dice`` by default: the per-scan mean Dice (or
``val_surface_dice``, ``val_loss``). The per-patient means are reported beside it, not monitored.

After the test predictions, :meth:`SegmentationTask.write_extras` draws up to three test scans with their
predicted and reference masks into the run folder's ``overlays/`` (:mod:`medtl.train.overlay`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "SegmentationTask",
    "segmentation_metrics",
    "patient_means",
    "make_segmentation_loss",
    "sliding_window",
]

SEG_METRICS = ("dice", "hd95", "surface_dice")
#: How many test scans a run draws into ``overlays/``.
OVERLAY_SCANS = 3


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

    dims = len(spacing)
    pl, ml = (torch.as_tensor(x).reshape(*x.shape[-dims:]) for x in (pred, mask))
    pl, ml = (x.round().long() if x.is_floating_point() else x for x in (pl, ml))
    # Only the box around the foreground of both (and one voxel more) is scored: foreground Dice counts, edges
    # and distances are the same as on the whole grid (MONAI crops each class that way itself), and a native-grid
    # CT (512 x 512 x 300) no longer makes one-hot copies of every voxel. Nothing in either: every class absent.
    union = (pl > 0) | (ml > 0)
    if not bool(union.any()):
        return np.tile(np.array([[1.0], [0.0], [1.0]]), (1, num_classes - 1))
    box = []
    for axis in range(dims):
        others = tuple(d for d in range(dims) if d != axis)
        found = torch.nonzero(union.any(dim=others)).flatten()
        box.append(slice(max(int(found[0]) - 1, 0), int(found[-1]) + 2))
    pl, ml = pl[tuple(box)], ml[tuple(box)]
    po, mo = (torch.stack([x == c for c in range(num_classes)])[None] for x in (pl, ml))  # boolean one-hot
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


def patient_means(table: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-class means over patients of each patient's mean over its scans (NaN values left out at both steps).

    Args:
        table: per-scan metrics ``(n_scans, n_metrics, n_classes)``.
        patients: the patient index of each scan (``(n_scans,)``).

    Returns:
        ``(n_metrics, n_classes)`` means, and the number of patients.
    """
    ids = np.unique(patients)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a patient or class whose values are all NaN
        per_patient = np.stack([np.nanmean(table[patients == i], axis=0) for i in ids])  # (P, M, K)
        return np.nanmean(per_patient, axis=0), int(ids.size)


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

    def __post_init__(self) -> None:
        from medtl.errors import ConfigError

        spelled: dict[str, list[str]] = {}
        for c in self.classes:
            spelled.setdefault(" ".join(str(c).split()).casefold(), []).append(str(c))
        same = [names for names in spelled.values() if len(names) > 1]
        if same:
            raise ConfigError(
                f"segmentation.classes {self.classes} names one class more than once "
                f"({' and '.join(repr(n) for n in same[0])} differ only by case or spacing): DICOM SEG segments are "
                "matched to classes with case ignored, and the metric columns would read alike",
                fix="list each class once, with one spelling",
            )
        keys = [f"{m}{suffix}" for m in SEG_METRICS for suffix in ("", "_patient")]
        keys += [f"{m}{part}_{c}" for m in SEG_METRICS for part in ("", "_patient") for c in self.classes[1:]]
        clash = sorted({k for k in keys if keys.count(k) > 1})
        if clash:
            raise ConfigError(
                f"segmentation.classes {self.classes} give metric names that clash ({', '.join(clash)}): a class "
                "named 'patient' or 'patient_<another class>' reads like a per-patient metric",
                fix="rename that class",
            )

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
        """Per-scan rows of a batch of whole scans: ``(metrics (B, 3*(K-1)), patients (B,), scans (B,), losses (B,))``
        (patients: the batch's ``patient`` indices, -1 without them)."""
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
        patient = batch.get("patient")
        patients = (
            torch.full((len(rows),), -1, dtype=torch.long)
            if patient is None
            else torch.as_tensor(patient).reshape(-1).long().to(scans.device)
        )
        return scores, patients, scans, torch.tensor(losses, dtype=torch.float64)

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
        """Means over scans and over patients, overall and per class (see the module docstring).

        Args:
            scores: per-scan rows of :meth:`evaluate_batch`.
            targets: each scan's patient index (-1: unknown; then no per-patient means).
        """
        t = self._table(scores)
        out: dict[str, Any] = {"n": int(t.shape[0])}
        if t.shape[0] == 0:
            return out | {m: math.nan for m in SEG_METRICS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: mean undefined
            per_class = np.nanmean(t, axis=0)  # (3, K-1)
        self._add_means(out, per_class, "")
        out["hd95_undefined"] = int(np.isnan(t[:, 1, :]).sum())
        patients = np.asarray(targets, dtype=np.int64).reshape(-1)
        if patients.shape[0] == t.shape[0] and (patients >= 0).all():
            per_class, out["n_patients"] = patient_means(t, patients)
            self._add_means(out, per_class, "_patient")
        return out

    def _add_means(self, out: dict[str, Any], per_class: np.ndarray, suffix: str) -> None:
        for i, name in enumerate(SEG_METRICS):
            vals = per_class[i]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[f"{name}{suffix}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            for c, cls in enumerate(self.foreground):
                out[f"{name}{suffix}_{cls}"] = float(vals[c])

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The logged value (an HD95 undefined on every scan logs NaN: the checkpoint and early stopping count it
        as no improvement)."""
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
        """Overlay PNGs of the first :data:`OVERLAY_SCANS` scans of ``dataset`` in ``run.overlay_dir``, named
        ``<scan name>.png`` (:func:`medtl.train.overlay.write_overlays`; the masks predicted by a sliding window)."""
        from medtl.train.overlay import write_overlays

        if not records or len(dataset) == 0:
            return
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        try:
            write_overlays(
                run.overlay_dir,
                lambda x: self.infer(model, x).float(),
                dataset,
                records,
                self.classes,
                max_scans=OVERLAY_SCANS,
                device=device,
            )
        finally:
            model.train(was_training)
