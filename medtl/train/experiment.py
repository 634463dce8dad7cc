"""``Experiment``: everything a run needs before training, resolved once and passed down.

The resolved config, its task (:func:`medtl.tasks.task_for`: the one place a config's task is decided), the resolved
weight source and input record (:func:`resolve_input_record`: the only place the model's input channels and the
intensity normalisation are decided), the manifest's records, the patient-level splits and the transform pipeline.
``fine_tune``, ``lr_find`` and ``compare`` build one; nothing below them resolves the ``model.weights`` string again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from medtl.config import ExperimentConfig, load_config
from medtl.data.manifest import Manifest
from medtl.data.splits import check_no_leakage, read_splits_csv
from medtl.errors import DataLoadError, ManifestError, MedtlError, RunDirError, TrainingError
from medtl.models import expected_input, weight_source_for
from medtl.tasks import task_for
from medtl.tasks.base import Task
from medtl.transforms.checks import modality_from_meta
from medtl.transforms.presets import Pipeline
from medtl.transforms.record import InputRecord
from medtl.utils import hash_patient_id
from medtl.weights.sources import IMAGENET_MEAN, IMAGENET_STD, Normalization, WeightSource

__all__ = [
    "read_manifest",
    "Experiment",
    "ScanInfo",
    "prepare_experiment",
    "resolve_weight_source",
    "resolve_input",
    "resolve_input_record",
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


def resolve_weight_source(config: Any, mode: str) -> WeightSource:
    """The config's ``model.weights`` as a record checked to fit the model (ImageNet for 3D: the inflated source)."""
    return weight_source_for(config.model.arch, config.model.weights, spatial_dims=3 if mode == "3d" else 2)


def resolve_input(config: Any, source: WeightSource, *, data_channels: int) -> tuple[int, Normalization]:
    """The model's input channels and the intensity normalisation, decided here and nowhere else.

    The weights' own answer (:func:`medtl.models.expected_input`: ImageNet 3 channels and its mean/std, MedicalNet
    1 channel and a z-score, the CT I3ResNet 3 channels and no normalisation, random weights the data's
    channels), unless the config sets ``model.in_channels`` or ``preprocess.normalization``.

    Args:
        config: an experiment or pretraining config (its ``model`` and ``preprocess`` sections are read).
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


def resolve_input_record(config: Any, scan: ScanInfo) -> tuple[WeightSource, InputRecord]:
    """The weight source and the model's input record of a config on scans like ``scan``.

    Modality and mode from the config or the scan (``auto``), channels and normalisation from the weights
    (:func:`resolve_input`). Training, pretraining and lr_find call this; a finished run's record is read back from
    its ``preprocessing.json``.

    Args:
        config: an experiment or pretraining config (``data.modality``, ``data.mode``, ``model``, ``preprocess``).
        scan: what the first scan says.
    """
    data = config.data
    modality = data.modality if data.modality != "auto" else modality_from_meta(scan.meta, scan.dims)
    mode = data.mode if data.mode != "auto" else ("2d" if scan.dims == 2 else "3d")
    source = resolve_weight_source(config, mode)
    data_channels = 3 if (mode == "2.5d" and getattr(data, "neighbor_slices", False)) else scan.channels
    in_channels, norm = resolve_input(config, source, data_channels=data_channels)
    record = InputRecord(
        modality=modality,
        mode=mode,
        scan_dims=scan.dims,
        scan_channels=scan.channels,
        flat_volumes=scan.flat,
        in_channels=in_channels,
        model_spatial_dims=3 if mode == "3d" else 2,
        normalization=norm,
    )
    return source, record


@dataclass
class Experiment:
    """A prepared experiment.

    Attributes:
        config: the resolved config.
        source: the resolved weight source.
        task: what is learned (its outputs, loss, metrics, prediction format).
        records: the manifest's rows as dicts.
        assignment: patient ID -> split.
        train_patients: the training patients used (the label-fraction subset).
        splits: split name -> records.
        pipeline: the transforms (``pipeline.record``: the input record, its size fixed).
        scan: what the first scan says about the data.
        datasets: split name -> dataset (when built).
    """

    config: ExperimentConfig
    source: WeightSource
    task: Task
    records: list[dict[str, Any]]
    assignment: dict[str, str]
    train_patients: list[str]
    splits: dict[str, list[dict[str, Any]]]
    pipeline: Pipeline
    scan: ScanInfo
    datasets: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    @property
    def input_record(self) -> InputRecord:
        return self.pipeline.record

    @property
    def modality(self) -> str:
        return self.input_record.modality

    @property
    def mode(self) -> str:
        return self.input_record.mode

    def build_model(self, *, pretrained: bool = True) -> nn.Module:
        """The backbone with this experiment's weights (``pretrained=False``: same network, random weights)."""
        from medtl.models import create_model

        model = create_model(
            self.config.model.arch,
            weights=self.source if pretrained else "scratch",
            in_channels=self.pipeline.in_channels,
            num_classes=self.task.num_outputs,
            spatial_dims=self.pipeline.model_spatial_dims,
            **self.task.model_options(self.config),
        )
        self.task.check_model(model, self.pipeline, self.config)
        return model

    def preprocessing(self) -> dict[str, Any]:
        """What preprocessing.json records: the input record, the task's state (its outputs, target scaling...),
        the weight source and the pseudonym check; enough to rebuild the pipeline and the network for inference."""
        return {
            **self.input_record.to_dict(),
            **self.task.state(),
            "weight_source": self.source.name,
            "pseudonym_check": pseudonym_check(),
            "description": self.pipeline.description,
        }

    def patient_counts(self) -> dict[str, int]:
        return {s: len({str(r["patient_id"]) for r in self.splits[s]}) for s in SPLITS}


def _split_records(
    cfg: ExperimentConfig, task: type[Task], records: list[dict[str, Any]], splits_file: Path | None
) -> tuple[dict[str, str], list[str], dict[str, list[dict[str, Any]]]]:
    assignment = read_splits_csv(splits_file) if splits_file is not None else task.make_splits(records, cfg.splits)
    check_no_leakage(records, assignment)
    patients = {str(r["patient_id"]) for r in records}
    all_train = sorted(p for p, s in assignment.items() if s == "train" and p in patients)
    train_patients = task.fraction_patients(all_train, records, cfg.splits.label_fraction, cfg.splits.seed)
    chosen = set(train_patients)
    splits = {
        "train": [r for r in records if str(r["patient_id"]) in chosen],
        "val": [r for r in records if assignment.get(str(r["patient_id"])) == "val"],
        "test": [r for r in records if assignment.get(str(r["patient_id"])) == "test"],
    }
    if not splits["val"]:
        raise TrainingError(
            f"no validation patients ({len(patients)} patients in {cfg.data.manifest}); "
            "raise splits.val_fraction or add val rows to the split column"
        )
    return assignment, train_patients, splits


def read_manifest(cfg: ExperimentConfig, *, check_files: bool = True) -> Manifest:
    """The experiment's manifest, read and validated by its task (the one place train, compare and predict read it).

    Raises:
        ManifestError: an invalid manifest for the task (missing columns, labels of another task...).
    """
    return task_for(cfg).read_manifest(cfg, check_files=check_files)


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
    task_cls = task_for(cfg)
    manifest = task_cls.read_manifest(cfg)
    if len(manifest) == 0:
        raise ManifestError(
            f"manifest {cfg.data.manifest} has no rows", path=str(cfg.data.manifest), fix="add one row per scan"
        )
    records = task_cls.records(cfg, manifest)
    sf = splits_file or cfg.splits.file
    assignment, train_patients, splits = _split_records(cfg, task_cls, records, Path(sf) if sf else None)

    scan = read_scan_info(records[0])
    source, record = resolve_input_record(cfg, scan)
    pipeline = task_cls.build_pipeline(cfg, record)
    task = task_cls.from_experiment(cfg, manifest, pipeline)
    task.check_training_split(records, assignment, str(cfg.data.manifest))
    exp = Experiment(
        config=cfg,
        source=source,
        task=task,
        records=records,
        assignment=assignment,
        train_patients=train_patients,
        splits=splits,
        pipeline=pipeline,
        scan=scan,
    )
    if build_datasets:
        for name, recs in splits.items():
            if recs:
                exp.datasets[name] = task.make_dataset(exp, recs, train=name == "train")
        task.fit(exp)
    return exp
