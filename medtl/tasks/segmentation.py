"""Segmentation: one label per voxel (:class:`SegmentationTask`, the :class:`~medtl.tasks.base.Task` of a config with a
``segmentation:`` section).

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
through :class:`~medtl.rundir.RunDir` (columns ``image, mask, patient_id, dice`` and ``<metric>_<class>``).
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.data.dataset import SegmentationDataset
from medtl.metric_specs import metrics_for_task
from medtl.tasks.base import Task

__all__ = [
    "SegmentationTask",
    "segmentation_metrics",
    "patient_means",
    "make_segmentation_loss",
    "sliding_window",
]

#: the segmentation metrics of the registry, in the order of the rows of :func:`segmentation_metrics`
SEG_METRICS = metrics_for_task("segmentation")
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
        ``(len(SEG_METRICS), num_classes - 1)``: one row per metric of :data:`SEG_METRICS` (dice, hd95,
        surface_dice; empty-mask conventions in the module docstring).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    dims = len(spacing)
    pl, ml = (torch.as_tensor(x).reshape(*x.shape[-dims:]) for x in (pred, mask))
    pl, ml = (x.round().long() if x.is_floating_point() else x for x in (pl, ml))
    # Only the box around the foreground of both (and one voxel more) is scored: foreground Dice counts, edges
    # and distances are the same as on the whole grid (MONAI crops each class that way itself), and a native-grid
    # CT (512 x 512 x 300) no longer makes one-hot copies of every voxel. Nothing in either: every class absent.
    union = (pl > 0) | (ml > 0)
    both_empty = {"dice": 1.0, "hd95": 0.0, "surface_dice": 1.0}
    one_empty = {"dice": 0.0, "hd95": np.nan, "surface_dice": 0.0}
    if not bool(union.any()):
        return np.tile(np.array([[both_empty[m]] for m in SEG_METRICS]), (1, num_classes - 1))
    box = []
    for axis in range(dims):
        others = tuple(d for d in range(dims) if d != axis)
        found = torch.nonzero(union.any(dim=others)).flatten()
        box.append(slice(max(int(found[0]) - 1, 0), int(found[-1]) + 2))
    pl, ml = pl[tuple(box)], ml[tuple(box)]
    po, mo = (torch.stack([x == c for c in range(num_classes)])[None] for x in (pl, ml))  # boolean one-hot
    spacing = [float(s) for s in spacing]
    out = np.full((len(SEG_METRICS), num_classes - 1), np.nan)
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
            value = both_empty
        elif in_p != in_m:
            value = one_empty
        else:
            value = {"dice": float(dice[c]), "hd95": float(hd[c]), "surface_dice": float(nsd[c])}
        out[:, c] = [value[m] for m in SEG_METRICS]
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
class SegmentationTask(Task):
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
    #: the names of the manifest's ``label`` values, which only stratify the split
    strata_names: list[str] = field(default_factory=list)
    name = "segmentation"
    default_output = "masks"
    predict_options = ("dicom_seg", "deidentify")

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
        return scores.double().numpy().reshape(-1, len(SEG_METRICS), k)

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

    # ------------------------------------------------------------------ config, manifest, experiment
    @classmethod
    def read_manifest(cls, config: Any, *, check_files: bool = True) -> Any:
        """``image, mask[, patient_id]``: a ``label`` column is optional and only stratifies the split (without it
        the manifest has the one class :data:`~medtl.data.manifest.UNLABELLED`)."""
        from medtl.data import Manifest

        return Manifest.from_csv(
            config.data.manifest,
            classes=config.data.classes,
            check_files=check_files,
            labels_required=False,
            label_column=config.data.label_column,
            image_column=config.data.image_column,
            patient_column=config.data.patient_column,
        )

    @classmethod
    def build_pipeline(cls, config: Any, record: Any) -> Any:
        """Joint image and mask transforms (:func:`medtl.transforms.segmentation.build_segmentation_pipeline`)."""
        from medtl.transforms.segmentation import build_segmentation_pipeline

        return build_segmentation_pipeline(config, record)

    @classmethod
    def records(cls, config: Any, manifest: Any) -> list[dict[str, Any]]:
        """The rows with absolute ``mask`` paths (the ``segmentation.mask_column``; relative to the CSV)."""
        records = manifest.to_dicts()
        attach_masks(records, Path(config.data.manifest), config.segmentation.mask_column)
        return records

    @classmethod
    def output_names(cls, config: Any, manifest: Any) -> list[str]:
        return list(config.segmentation.classes)

    @classmethod
    def from_experiment(cls, config: Any, manifest: Any, pipeline: Any) -> SegmentationTask:
        task = cls._of(config, pipeline)
        task.strata_names = list(manifest.classes)
        return task

    @classmethod
    def from_state(cls, config: Any, state: dict[str, Any], pipeline: Any) -> SegmentationTask:
        task = cls._of(config, pipeline)
        task.strata_names = list(state.get("label_classes") or [])
        return task

    @classmethod
    def _of(cls, config: Any, pipeline: Any) -> SegmentationTask:
        seg = config.segmentation
        return cls(
            list(seg.classes),
            loss=seg.loss,
            roi_size=list(pipeline.size),
            overlap=seg.overlap,
            blend=seg.blend,
            tolerance_mm=seg.surface_tolerance_mm,
            spatial_dims=pipeline.model_spatial_dims,
        )

    def state(self) -> dict[str, Any]:
        return super().state() | {"label_classes": list(self.strata_names), "size": list(self.roi_size)}

    def describe_labels(self, records: Sequence[dict[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for r in records:
            name = self.strata_names[int(r["label"])]
            counts[name] = counts.get(name, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))

    def make_dataset(self, experiment: Any, records: list[dict[str, Any]], *, train: bool, cache: str | None = None):
        from medtl.data.loading import preprocessing_cache_dir

        cfg = experiment.config
        return PatientSegmentationDataset(
            records,
            experiment.pipeline,
            train=train,
            cache=cache or cfg.train.cache,
            # the cached stage reads the masks and checks them against the classes
            cache_dir=preprocessing_cache_dir(experiment, {"segmentation": list(cfg.segmentation.classes)}),
            num_workers=cfg.train.num_workers,
            seed=cfg.train.seed,
        )

    def eval_dataset(self, config: Any, pipeline: Any, records: list[dict[str, Any]]):
        return SegmentationDataset(records, pipeline, train=False, cache="none")

    # ------------------------------------------------------------------ network
    def model_options(self, config: Any) -> dict[str, Any]:
        return {"head": "unet", "decoder_channels": config.segmentation.decoder_channels}

    def check_model(self, model: nn.Module, pipeline: Any, config: Any) -> None:
        """A window (patch or 2D image) the encoder cannot halve evenly is a config error with a size that works."""
        from medtl.errors import ConfigError

        size, stride = list(pipeline.size), tuple(model.stride)
        if not any(n % s for n, s in zip(size, stride, strict=False)):
            return
        where = "segmentation.patch_size" if pipeline.model_spatial_dims == 3 else "preprocess.size"
        fixed = [max(s, round(n / s) * s) for n, s in zip(size, stride, strict=False)]
        raise ConfigError(
            f"{where} {size} must be a multiple of {list(stride)} on every axis "
            f"({config.model.arch} halves its input that many times)",
            fix=f"set {where} to e.g. {fixed}",
        )

    # ------------------------------------------------------------------ a finished run
    def score_split(self, experiment: Any, model: nn.Module, split: str, *, device: str, precision: str):
        """Validation on the model's grid (as during training); the test scans on each scan's own grid, as
        ``evaluate`` scores them and ``predict`` writes their masks (:mod:`medtl.train.seg_inference`)."""
        if split != "test":
            return super().score_split(experiment, model, split, device=device, precision=precision)
        from medtl.train.seg_inference import native_split_scores
        from medtl.transforms.segmentation import build_inference_transforms

        transforms = build_inference_transforms(experiment.config, experiment.input_record)
        return native_split_scores(model, self, transforms, experiment.splits["test"], device=device)

    def export_spec(self, record: Any) -> dict[str, Any]:
        """Logits of a window the size of the training patch, slid over the whole scan as ``predict`` does."""
        window = {
            "roi_size": [int(s) for s in self.roi_size or record.size or []],
            "overlap": float(self.overlap),
            "mode": str(self.blend),
            "sw_batch_size": 4,
        }
        return {"dense": True, "scores": None, "window": window}

    def result_extras(self) -> dict[str, Any]:
        return {"metrics_grid": {"val": "preprocessed", "test": "native"}}

    def card_metrics(self, config: Any, result: dict[str, Any]) -> list[str]:
        """Per-class Dice, HD95 and surface Dice rows."""
        from medtl.train.card import fmt_metric, md_escape

        seg = config.segmentation
        lines = [
            f"Dice, HD95 (mm) and surface Dice (tolerance {seg.surface_tolerance_mm:g} mm) per foreground class, "
            "means over scans: validation (which chose the weights) on the model's preprocessed grid, test on each "
            "scan's own grid, as `medtl evaluate` scores and `medtl predict` writes masks. A class absent from both "
            "mask and prediction scores Dice 1, HD95 0; absent from one of them: Dice 0, HD95 undefined (left out "
            "of the mean).",
            "",
            "| split | class | n | Dice | HD95 mm | surface Dice |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("val", "test"):
            m = result["metrics"].get(name) or {}
            if not m:
                continue
            for cls in self.foreground:
                lines.append(
                    f"| {name} | {md_escape(cls)} | {m.get('n', 0)} | {fmt_metric(m.get('dice_' + cls))} | "
                    f"{fmt_metric(m.get('hd95_' + cls))} | {fmt_metric(m.get('surface_dice_' + cls))} |"
                )
        return lines

    @classmethod
    def describe_evaluation(cls, result: dict[str, Any]) -> list[str]:
        fg = list(result["classes"][1:])
        where = "each scan's own grid" if result.get("grid") == "native" else "the model's preprocessed grid"
        lines = [f"scored on {where}", f"scans: {_fmt_seg(result, fg)}"]
        lines.append(
            f"patients ({result['n_patients']}, mean of per-patient means): {_fmt_seg(result['patient_mean'], fg)}"
        )
        lines += [f"  {p['patient_id']} ({p['n_scans']} scan(s)): {_fmt_seg(p, fg)}" for p in result["patients"]]
        if result.get("hd95_undefined"):
            lines.append(
                f"hd95 undefined (a class in only one of prediction and reference) in {result['hd95_undefined']} "
                "case(s)"
            )
        lines += [
            f"patients the run saw in {split} (not in the metrics above): {_fmt_seg(sm, fg)}"
            for split, sm in result["seen"].items()
        ]
        return lines

    # ------------------------------------------------------------------ predict and evaluate
    def predict(
        self,
        loaded: Any,
        inputs: list[Any],
        out: Path | None,
        *,
        batch_size: int | None = None,
        device: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """One NIfTI label map per scan in the folder ``out``, on the scan's own grid (``options``:
        ``dicom_seg`` also writes a DICOM SEG per DICOM input)."""
        from medtl.train.predict import predict_masks

        return predict_masks(loaded, inputs, out, device, **(options or {}))

    def evaluate(
        self,
        loaded: Any,
        manifest: Any,
        *,
        out: Path | None = None,
        allow_seen: bool = False,
        device: str | None = None,
        grid: str = "native",
    ) -> dict[str, Any]:
        """Dice, HD95 and surface Dice per scan, per patient and overall
        (:func:`medtl.train.scoring.evaluate_segmentation`)."""
        from medtl.train.scoring import evaluate_segmentation

        return evaluate_segmentation(loaded, manifest, out=out, allow_seen=allow_seen, device=device, grid=grid)

    # ------------------------------------------------------------------ compare
    @classmethod
    def patient_units(cls, run: Any, classes: list[str]) -> Any:
        from medtl.comparison.patient_values import aggregate_scan_rows

        return aggregate_scan_rows(run.read_prediction_rows("test"), source=str(run.predictions_file("test")))

    @classmethod
    def units_from_dict(cls, data: dict[str, Any]) -> Any:
        from medtl.comparison.patient_values import PatientValues

        return PatientValues.from_dict(data)

    @classmethod
    def describe_primary(cls, results: Any, summary: Any, same: str) -> str:
        spec = summary.spec
        name = f"{spec.words} in {spec.unit}" if spec.unit else spec.words
        direction = "higher is better" if spec.higher_is_better else "lower is better"
        return (
            f"Segmentation. Primary metric: test {name} ({direction}), on each scan's own grid (the prediction put "
            "back where `medtl predict` writes it): for each foreground class, each patient's mean over the "
            "patient's scans (HD95 over the scans where it is defined), the mean over patients, then the mean over "
            f"the classes; {same}. Classes: {', '.join(results.classes)} (the first is the background)."
        )

    @classmethod
    def bootstrap_units(cls) -> str:
        return "patients, not scans"

    @classmethod
    def report_blocks(cls, results: Any, summary: Any, out: Path) -> list[Any]:
        """Patients left out of HD95, and each arm's example overlays (copied into the comparison folder)."""
        from medtl.comparison.overlays import collect_overlays
        from medtl.comparison.render import Block

        results.overlays = collect_overlays(results, out)
        b: list[Any] = []
        rows = [
            [results.arm(r.arm).display, f"{r.fraction * 100:g}%", ", ".join(str(n) for n in r.left_out["hd95"])]
            for r in summary.rows
            if r.left_out.get("hd95")
        ]
        b.append(Block("h2", "Patients left out of HD95"))
        if rows:
            b.append(
                Block(
                    "p",
                    "HD95 is undefined on a scan where a class is in only one of the predicted and the reference mask "
                    "(its Dice for that class is 0). A patient with no scan where it is defined is left out of that "
                    "run's HD95; per run (in seed order), the test patients left out:",
                )
            )
            b.append(Block("table", header=["arm", "labels", "patients left out per run"], rows=rows))
        else:
            b.append(Block("p", "None: HD95 was defined for every test patient of every run."))
        b.append(Block("h2", "Example overlays"))
        if not any(results.overlays.values()):
            b.append(Block("p", "No run wrote overlays (overlays/*.png in its run folder)."))
        f = max(results.fractions)
        for arm in results.arms:
            paths = results.overlays.get(arm.name) or []
            if not paths:
                continue
            b.append(
                Block(
                    "p",
                    f"{arm.display}: predicted masks over test scans, from its first finished run with "
                    f"{f * 100:g}% of the labels (copied to {Path(paths[0]).parent.as_posix()}/).",
                )
            )
            b.extend(Block("img", text=f"{arm.display}: {Path(p).stem}", path=out / p) for p in paths)
        return b

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        out = []
        empty = [r for r in runs if r.test_metrics.get("dice", math.nan) == 0.0]
        if empty:
            out.append(
                f"{arm.display}: in {len(empty)} of {len(runs)} runs the Dice was 0 for every test patient (the "
                "model found none of the foreground classes). Differences against this arm measure that failure, "
                "not the value of pretraining; train longer."
            )
        metric = results.primary_metric
        left = [(r, r.predictions.n_left_out(metric)) for r in runs if metric in r.predictions.values]
        left = [(r, n) for r, n in left if n]
        if left:
            out.append(
                f"{arm.display}: {sum(n for _, n in left)} test patient(s) over {len(left)} run(s) were left out of "
                f"{metric_spec_words(metric)}, which is undefined when a class is in only one of the predicted and "
                f"the reference mask (their Dice for that class is 0); see 'Patients left out of "
                f"{metric_spec_words(metric)}'."
            )
        return out

    @classmethod
    def results_columns(cls, results: Any, record: Any) -> dict[str, Any]:
        return {"hd95_patients_left_out": record.predictions.n_left_out("hd95") if record.ok else ""}


def metric_spec_words(name: str) -> str:
    from medtl.metric_specs import metric_spec

    return metric_spec(name).words


def _fmt_seg(m: dict[str, Any], classes: list[str]) -> str:
    parts = [f"n {m.get('n', 0)}"] if "n" in m else []
    for k in SEG_METRICS:
        v = m.get(k)
        if v is None:
            continue
        per = "  ".join(f"{c} {m[f'{k}_{c}']:.4f}" for c in classes if isinstance(m.get(f"{k}_{c}"), float))
        parts.append(f"{k} {v:.4f}" + (f" ({per})" if per and len(classes) > 1 else ""))
    return "  ".join(parts)


def attach_masks(records: list[dict[str, Any]], manifest: Path, column: str) -> None:
    """Give each record an absolute ``mask`` path from the manifest's mask column (relative paths: to the CSV).

    Raises:
        ManifestError: the column is missing, a cell is empty, or a mask file does not exist (rows named).
    """
    from medtl.errors import ManifestError

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


class PatientSegmentationDataset(SegmentationDataset):
    """A :class:`~medtl.data.dataset.SegmentationDataset` whose samples also hold ``patient``: the index of the
    scan's patient among the dataset's patients (sorted pseudonyms), from which :class:`SegmentationTask` computes
    its per-patient means."""

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
