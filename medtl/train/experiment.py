"""``Experiment``: everything a run needs before training, resolved once and passed down.

The resolved config, the resolved weight source (the only place the model's input channels and the
intensity normalisation are decided), the manifest's records, the patient-level splits, the task and the
transform pipeline. ``fine_tune``, ``lr_find`` and ``compare`` build one; nothing below them resolves the
``model.weights`` string again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from medtl.config import ExperimentConfig, load_config
from medtl.data.manifest import Manifest
from medtl.data.splits import check_no_leakage, label_fraction_patients, make_splits, patient_labels, read_splits_csv
from medtl.errors import ConfigError, DataLoadError, ManifestError, MedtlError, RunDirError, TrainingError
from medtl.models import expected_input, weight_source_for
from medtl.train.datasets import (
    PatientSegmentationDataset,
    attach_masks,
    class_balance,
    class_weights,
    make_dataset,
)
from medtl.train.segmentation import SegmentationTask
from medtl.train.task import ClassificationTask
from medtl.transforms.checks import modality_from_meta
from medtl.transforms.presets import Pipeline, build_pipeline
from medtl.transforms.segmentation import build_segmentation_pipeline
from medtl.utils import hash_patient_id
from medtl.weights.sources import IMAGENET_MEAN, IMAGENET_STD, Normalization, WeightSource

__all__ = [
    "read_manifest",
    "Experiment",
    "ScanInfo",
    "prepare_experiment",
    "resolve_weight_source",
    "resolve_input",
    "make_dataset",
    "attach_masks",
    "segmentation_task",
    "PatientSegmentationDataset",
    "class_balance",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ScanInfo:
    """What the first scan of a manifest says about all of them.

    Attributes:
        dims: spatial dims of the image (2 for a radiograph or a one-slice volume, 3 for a volume).
        channels: channels as read (1 grey, 3 RGB, N volumes of a 4D NIfTI).
        flat: a volume with a single slice (read as 3D, used as the 2D image it is).
        meta: the scan's metadata (modality, units, ...).
    """

    dims: int
    channels: int
    flat: bool
    meta: dict[str, Any]


def pseudonym_check() -> str:
    """The pseudonym of a fixed string under this installation's secret: equal only under the same secret."""
    return hash_patient_id("medtl-key-check")


def check_pseudonyms(run_dir: Any, recorded: str | None) -> None:
    """Refuse to match a run's patients when it was made under another pseudonym secret.

    Raises:
        RunDirError: the run's splits.csv holds pseudonyms made with another secret.
    """
    if recorded is not None and recorded != pseudonym_check():
        raise RunDirError(
            f"run {run_dir} was made with another patient-pseudonym secret, so its splits.csv does not match "
            "the pseudonyms made here",
            path=str(run_dir),
            fix="set MEDTL_ID_SECRET or MEDTL_ID_SECRET_FILE to the study's secret (README: patient pseudonyms)",
        )


def read_scan_info(record: dict[str, Any]) -> ScanInfo:
    from medtl.io import read_scan

    try:
        img = read_scan(record["image"], record.get("series") or None)
    except MedtlError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported with the file and row
        raise DataLoadError(
            f"cannot read {record['image']} (manifest row {record.get('row')}): {exc}", path=str(record["image"])
        ) from exc
    flat = img.ndim == 4 and int(img.shape[-1]) == 1
    dims = 2 if flat else img.ndim - 1
    return ScanInfo(dims=dims, channels=int(img.shape[0]), flat=flat, meta=dict(img.meta))


def resolve_weight_source(config: ExperimentConfig, mode: str) -> WeightSource:
    """The config's ``model.weights`` as a record checked to fit the model (ImageNet for 3D: the inflated source)."""
    return weight_source_for(config.model.arch, config.model.weights, spatial_dims=3 if mode == "3d" else 2)


def resolve_input(config: ExperimentConfig, source: WeightSource, *, data_channels: int) -> tuple[int, Normalization]:
    """The model's input channels and the intensity normalisation, decided here and nowhere else.

    The weights' own answer (:func:`medtl.models.expected_input`: ImageNet 3 channels and its mean/std, MedicalNet
    1 channel and a z-score, the CT I3ResNet 3 channels and no normalisation, random weights the data's
    channels), unless the config sets ``model.in_channels`` or ``preprocess.normalization``.
    """
    expected = expected_input(source, config.model.arch, data_channels=data_channels)
    override = config.preprocess.normalization
    if override == "auto":
        norm = expected.normalization
    elif override == "imagenet":
        norm = (
            source.normalization
            if source.normalization.kind == "imagenet"
            else Normalization("imagenet", IMAGENET_MEAN, IMAGENET_STD)
        )
    else:
        norm = Normalization(override)
    channels = config.model.in_channels
    if channels is None:
        weights_fix_channels = source.in_channels is not None
        channels = expected.in_channels if weights_fix_channels or norm.kind != "imagenet" else 3
    return int(channels), norm


@dataclass
class Experiment:
    """A prepared experiment.

    Attributes:
        config: the resolved config.
        source: the resolved weight source.
        task: what is learned (classes, loss, metrics, prediction format).
        records: the manifest's rows as dicts.
        assignment: patient ID -> split.
        train_patients: the training patients used (the label-fraction subset).
        splits: split name -> records.
        pipeline: the transforms.
        modality, mode: resolved from ``auto``.
        scan: what the first scan says about the data.
        datasets: split name -> dataset (when built).
    """

    config: ExperimentConfig
    source: WeightSource
    task: ClassificationTask | SegmentationTask
    records: list[dict[str, Any]]
    assignment: dict[str, str]
    train_patients: list[str]
    splits: dict[str, list[dict[str, Any]]]
    pipeline: Pipeline
    modality: str
    mode: str
    scan: ScanInfo
    datasets: dict[str, Any] = field(default_factory=dict)
    label_classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    @property
    def strata(self) -> list[str]:
        """Names of the manifest's ``label`` values (the classes; in segmentation, the split's strata)."""
        return self.label_classes or self.task.classes

    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        """The backbone with this experiment's weights (``pretrained=False``: same network, random weights)."""
        from medtl.models import create_model

        seg = self.config.segmentation
        model = create_model(
            self.config.model.arch,
            weights=self.source if pretrained else "scratch",
            in_channels=self.pipeline.in_channels,
            num_classes=self.task.num_outputs,
            spatial_dims=self.pipeline.model_spatial_dims,
            **({"task": "segmentation", "decoder_channels": seg.decoder_channels} if seg is not None else {}),
        )
        if seg is not None:
            self._check_window(list(self.pipeline.size), tuple(model.stride))
        return model

    def _check_window(self, size: list[int], stride: tuple[int, ...]) -> None:
        """A segmentation window (patch or 2D image) the encoder cannot halve evenly is a config error."""
        if not any(n % s for n, s in zip(size, stride, strict=False)):
            return
        field = "segmentation.patch_size" if self.pipeline.model_spatial_dims == 3 else "preprocess.size"
        fixed = [max(s, round(n / s) * s) for n, s in zip(size, stride, strict=False)]
        raise ConfigError(
            f"{field} {size} must be a multiple of {list(stride)} on every axis "
            f"({self.config.model.arch} halves its input that many times)",
            fix=f"set {field} to e.g. {fixed}",
        )

    def preprocessing(self) -> dict[str, Any]:
        """What preprocessing.json records: enough to rebuild the pipeline and the network for inference."""
        return {
            "task": self.task.name,
            "modality": self.modality,
            "mode": self.mode,
            "scan_dims": self.scan.dims,
            "scan_channels": self.scan.channels,
            "flat_volumes": self.scan.flat,
            "in_channels": self.pipeline.in_channels,
            "model_spatial_dims": self.pipeline.model_spatial_dims,
            "normalization": self.pipeline.normalization.to_dict(),
            "classes": self.classes,
            **({"label_classes": self.label_classes, "size": self.pipeline.size} if self.label_classes else {}),
            "weight_source": self.source.name,
            "pseudonym_check": pseudonym_check(),
            "description": self.pipeline.description,
        }

    def patient_counts(self) -> dict[str, int]:
        return {s: len({str(r["patient_id"]) for r in self.splits[s]}) for s in SPLITS}


def _split_records(
    cfg: ExperimentConfig, records: list[dict[str, Any]], classes: list[str], splits_file: Path | None
) -> tuple[dict[str, str], list[str], dict[str, list[dict[str, Any]]]]:
    if splits_file is not None:
        assignment = read_splits_csv(splits_file)
    else:
        s = cfg.splits
        assignment = make_splits(
            records, seed=s.seed, val_fraction=s.val_fraction, test_fraction=s.test_fraction, folds=s.folds, fold=s.fold
        )
    check_no_leakage(records, assignment)
    plabels = patient_labels(records)
    all_train = sorted(p for p, s in assignment.items() if s == "train" and p in plabels)
    scan_counts = Counter(int(r["label"]) for r in records if assignment.get(str(r["patient_id"])) == "train")
    missing = [classes[i] for i in range(len(classes)) if scan_counts.get(i, 0) == 0]
    if missing:
        raise TrainingError(
            f"class(es) {missing} have no training patients in {cfg.data.manifest} "
            f"(training scans per class: { {classes[k]: v for k, v in sorted(scan_counts.items())} }); "
            "add scans of these classes, or lower splits.val_fraction/test_fraction"
        )
    train_patients = (
        label_fraction_patients(all_train, plabels, cfg.splits.label_fraction, cfg.splits.seed)
        if cfg.splits.label_fraction < 1.0
        else all_train
    )
    chosen = set(train_patients)
    splits = {
        "train": [r for r in records if str(r["patient_id"]) in chosen],
        "val": [r for r in records if assignment.get(str(r["patient_id"])) == "val"],
        "test": [r for r in records if assignment.get(str(r["patient_id"])) == "test"],
    }
    if not splits["val"]:
        raise TrainingError(
            f"no validation patients ({len(plabels)} patients in {cfg.data.manifest}); "
            "raise splits.val_fraction or add val rows to the split column"
        )
    return assignment, train_patients, splits


def read_manifest(cfg: ExperimentConfig, *, check_files: bool = True) -> Manifest:
    """The experiment's manifest, read and validated (the one place train, compare and predict read it).

    A classification manifest needs a ``label`` column. A segmentation manifest (the config has a ``segmentation``
    section) may leave it out: ``image, mask[, patient_id]`` is enough, and the manifest then has the one class
    :data:`~medtl.data.manifest.UNLABELLED` (``labelled`` False), so patients are split without stratification and
    a label fraction keeps that fraction of the training patients. When the column is there, its labels stratify
    the split as in classification (e.g. ``nodule`` / ``no_nodule``: write such a column to stratify by what the
    masks hold). Strata are not derived from the masks themselves: that would read every label map before the
    split, and compare reads manifests without opening any file.

    Raises:
        ConfigError: ``data.label_column`` is not ``label``. ManifestError: an invalid manifest (a classification
            manifest without a ``label`` column among them).
    """
    if cfg.data.label_column != "label":
        raise ConfigError(
            f"data.label_column {cfg.data.label_column!r}: labels are read from the 'label' column only; "
            "rename the column in the manifest"
        )
    return Manifest.from_csv(
        cfg.data.manifest,
        classes=cfg.data.classes,
        check_files=check_files,
        labels_required=cfg.segmentation is None,
    )


def prepare_experiment(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    splits_file: str | Path | None = None,
    build_datasets: bool = True,
) -> Experiment:
    """Read the manifest, split by patient, resolve the weights, build the transforms and datasets.

    Args:
        config: the experiment config (or anything :func:`~medtl.config.load_config` takes).
        splits_file: reuse this splits.csv (a resumed run reuses its own); default ``config.splits.file``.
        build_datasets: also build (and cache) the train/val/test datasets.

    Raises:
        ManifestError: empty or invalid manifest. TrainingError: a class has no training patients, no
            validation patients, patients crossing splits. ConfigError: a mode that does not fit the scans.
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    manifest = read_manifest(cfg)
    if len(manifest) == 0:
        raise ManifestError(
            f"manifest {cfg.data.manifest} has no rows", path=str(cfg.data.manifest), fix="add one row per scan"
        )
    classes = list(manifest.classes)
    seg = cfg.segmentation
    if seg is None and len(classes) < 2:
        raise TrainingError(
            f"manifest {cfg.data.manifest} has a single class {classes}; classification needs two or more"
        )
    records = manifest.to_dicts()
    if seg is not None:
        attach_masks(records, Path(cfg.data.manifest), seg.mask_column)
    sf = splits_file or cfg.splits.file
    assignment, train_patients, splits = _split_records(cfg, records, classes, Path(sf) if sf else None)

    scan = read_scan_info(records[0])
    modality = cfg.data.modality if cfg.data.modality != "auto" else modality_from_meta(scan.meta, scan.dims)
    mode = cfg.data.mode if cfg.data.mode != "auto" else ("2d" if scan.dims == 2 else "3d")
    source = resolve_weight_source(cfg, mode)
    data_channels = 3 if (mode == "2.5d" and cfg.data.neighbor_slices) else scan.channels
    in_channels, norm = resolve_input(cfg, source, data_channels=data_channels)
    pipeline = (build_pipeline if seg is None else build_segmentation_pipeline)(
        cfg,
        modality=modality,
        mode=mode,
        scan_dims=scan.dims,
        scan_channels=scan.channels,
        flat_volumes=scan.flat,
        in_channels=in_channels,
        normalization=norm,
    )
    exp = Experiment(
        config=cfg,
        source=source,
        task=ClassificationTask(classes, label_smoothing=cfg.train.label_smoothing)
        if seg is None
        else segmentation_task(cfg, pipeline),
        records=records,
        assignment=assignment,
        train_patients=train_patients,
        splits=splits,
        pipeline=pipeline,
        modality=modality,
        mode=mode,
        scan=scan,
        label_classes=classes if seg is not None else None,
    )
    if build_datasets:
        for name, recs in splits.items():
            if recs:
                exp.datasets[name] = make_dataset(exp, recs, train=name == "train")
        if cfg.train.class_balance == "weighted_loss" and seg is None:
            exp.task.class_weights = class_weights(exp.datasets["train"].labels, len(classes))
    return exp


def segmentation_task(cfg: ExperimentConfig, pipeline: Pipeline) -> SegmentationTask:
    """The segmentation task of a config (window size: the pipeline's patch or image size)."""
    seg = cfg.segmentation
    if seg is None:
        raise ConfigError("segmentation_task needs a segmentation section in the config")
    return SegmentationTask(
        list(seg.classes),
        loss=seg.loss,
        roi_size=list(pipeline.size),
        overlap=seg.overlap,
        blend=seg.blend,
        tolerance_mm=seg.surface_tolerance_mm,
        spatial_dims=pipeline.model_spatial_dims,
    )
