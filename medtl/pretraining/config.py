"""The pretraining config: unlabeled scans, an encoder to start from, a self-supervised method, views, training.

Parsed with pydantic and ``extra="forbid"`` like the experiment config, so a typo fails with its path and the
allowed fields. Relative paths in a YAML file are relative to that file. Example::

    data:
      folder: ../unlabeled/xray          # or manifest: scans.csv (one column, image)
    preprocess:
      size: [96, 96]
    model:
      arch: mobilenet_v2
      weights: imagenet                  # scratch | imagenet | medicalnet | a file: where pretraining starts
    method: simclr                       # or genesis (Models Genesis restoration)
    train:
      epochs: 20
      batch_size: 64
    output:
      dir: ../runs
      name: xray-simclr                  # registers the encoder as weights "local:xray-simclr"
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtl.config import PreprocessConfig, resolve_relative_path
from medtl.config.loading import raw_config
from medtl.config.sections import check_run_name
from medtl.errors import ConfigError

__all__ = [
    "PretrainDataConfig",
    "PretrainModelConfig",
    "ViewsConfig",
    "SimCLRConfig",
    "GenesisConfig",
    "PretrainTrainConfig",
    "KnnConfig",
    "PretrainOutputConfig",
    "PretrainConfig",
    "load_pretrain_config",
    "NAME_PATTERN",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Bump when the code of the cached (deterministic) preprocessing changes what a cached sample holds.
PRETRAIN_CACHE_VERSION = 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PretrainDataConfig(_Section):
    """The unlabeled scans: a manifest with an ``image`` column, or a folder indexed like ``medtl index``."""

    manifest: Path | None = Field(
        None, description="CSV with an image column (optional: series, patient_id); other columns are ignored."
    )
    folder: Path | None = Field(None, description="A folder of DICOM series and NIfTI files, indexed recursively.")
    modality: Literal["auto", "CT", "MR", "XR"] = Field(
        "auto", description="Intensity handling. auto: from the first scan's DICOM Modality (NIfTI: set it)."
    )
    mode: Literal["auto", "2d", "3d"] = Field("auto", description="2d: images; 3d: volumes; auto: from the scans.")

    @model_validator(mode="after")
    def _one_source(self) -> PretrainDataConfig:
        if (self.manifest is None) == (self.folder is None):
            raise ValueError("set exactly one of data.manifest (a CSV with an image column) and data.folder")
        return self


class PretrainModelConfig(_Section):
    """The encoder and where pretraining starts."""

    arch: str = Field(description="Architecture, e.g. resnet18, mobilenet_v2, resnet18_3d (see `medtl backbones`).")
    weights: str = Field(
        "scratch",
        description="Starting weights: scratch, imagenet, imagenet-inflated, medicalnet, a local:<name> source or "
        "a checkpoint file (continuing from pretrained weights is domain-adaptive pretraining).",
    )
    in_channels: int | None = Field(None, ge=1, description="Input channels (default: what the weights expect).")


class ViewsConfig(_Section):
    """Random views of a scan (MONAI transforms valid for medical images: no colour jitter on HU)."""

    size: list[int] | None = Field(
        None, description="Size of each view, one value per spatial dim (default: preprocess.size)."
    )
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="Random resized crop: each side of the crop is this fraction of the image's."
    )
    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a flip along each flip axis.")
    flip_axes: list[int] = Field([0], description="Spatial axes that may be flipped.")
    rotate_deg: float = Field(10.0, ge=0.0, description="Maximum rotation in degrees (small affine).")
    zoom: float = Field(0.1, ge=0.0, lt=1.0, description="Maximum relative zoom of the small affine.")
    affine_prob: float = Field(0.5, ge=0.0, le=1.0)
    intensity_scale: float = Field(0.1, ge=0.0, lt=1.0, description="Maximum relative intensity scaling.")
    intensity_shift: float = Field(0.1, ge=0.0, description="Maximum additive intensity shift.")
    noise_std: float = Field(0.02, ge=0.0, description="Standard deviation of Gaussian noise (0: none).")
    blur_prob: float = Field(0.3, ge=0.0, le=1.0, description="Probability of a Gaussian blur.")
    blur_sigma: tuple[float, float] = Field((0.25, 1.0), description="Range of the blur's sigma in voxels.")

    @field_validator("crop_scale")
    @classmethod
    def _scale_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1 (got {list(v)})")
        return v


class SimCLRConfig(_Section):
    """SimCLR (Chen et al. 2020): lightly's projection head and NT-Xent loss, gathered over DDP ranks."""

    temperature: float = Field(0.2, gt=0.0, description="NT-Xent temperature.")
    hidden_dim: int | None = Field(None, ge=1, description="Projection head hidden size (default: the encoder's).")
    output_dim: int = Field(128, ge=1, description="Projection size.")


class GenesisConfig(_Section):
    """Models Genesis (Zhou et al. 2019): restore the scan from a corrupted copy, with a light decoder."""

    shuffle_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of local voxel shuffling.")
    nonlinear_prob: float = Field(0.9, ge=0.0, le=1.0, description="Probability of a non-linear intensity map.")
    paint_prob: float = Field(0.9, ge=0.0, le=1.0, description="Probability of in- or out-painting.")
    inpaint_rate: float = Field(0.2, ge=0.0, le=1.0, description="Share of painting that is in-painting.")
    decoder_width: int = Field(32, ge=4, description="Channels of the decoder's stages.")


class PretrainTrainConfig(_Section):
    """How to train (Lightning; devices and DDP as in training)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=2, description="Scans per batch and device (contrastive: two views each).")
    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate (AdamW; linear warm-up, then cosine decay).")
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0, description="Epochs of linear warm-up.")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed", "32-true", "bf16-true"] = Field(
        "auto", description="auto: bf16-mixed on a GPU, 32 on CPU."
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(1, ge=1, description="Devices per node; > 1 uses Lightning's DDP strategy.")
    num_nodes: int = Field(1, ge=1)
    sync_batchnorm: bool = Field(False, description="Synchronise batch-norm statistics across devices (GPUs).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of torch in this process (default: the cores this process may use), as in training.",
    )
    seed: int = Field(0, description="Seed of weight initialisation, shuffling and views.")
    cache: Literal["memory", "disk", "none"] = Field(
        "disk",
        description="Cache preprocessed scans: disk (PersistentDataset, archives larger than memory), memory "
        "(CacheDataset), none.",
    )
    limit_train_batches: int | None = Field(None, ge=1, description="Cap on batches per epoch (quick checks).")
    deterministic: bool = Field(False, description="Ask torch for deterministic algorithms.")


class KnnConfig(_Section):
    """A k-NN probe on a small labelled manifest, so a user sees whether pretraining learns anything."""

    manifest: Path | None = Field(None, description="Labelled manifest (image, label[, patient_id]); None: off.")
    every: int = Field(5, ge=1, description="Score every this many epochs (and after the last).")
    k: int = Field(10, ge=1, description="Neighbours (cosine similarity of pooled features).")


class PretrainOutputConfig(_Section):
    """Where the run goes, and the name the encoder is registered under (``local:<name>``)."""

    dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    name: str | None = Field(None, description="Run folder and local weight name; default <arch>-<method>-<time>.")
    register_weights: bool = Field(True, description="Register the encoder in the weight cache as local:<name>.")
    overwrite: bool = Field(False, description="Replace an existing local:<name> of the same name.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str | None) -> str | None:
        v = check_run_name(v)  # a run folder's name first, as a training run's; then a weight name too
        if v is not None and not NAME_PATTERN.match(v):
            raise ValueError(f"name {v!r} may hold only letters, digits, '_', '.', '-' and must start with one")
        return v


class PretrainConfig(_Section):
    """A whole pretraining run."""

    data: PretrainDataConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    model: PretrainModelConfig
    method: Literal["simclr", "genesis"] = Field("simclr", description="simclr (contrastive) or genesis (restoration).")
    views: ViewsConfig = ViewsConfig()
    simclr: SimCLRConfig = SimCLRConfig()
    genesis: GenesisConfig = GenesisConfig()
    train: PretrainTrainConfig = PretrainTrainConfig()
    knn: KnnConfig = KnnConfig()
    output: PretrainOutputConfig = PretrainOutputConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-compatible dict (paths as strings)."""
        return self.model_dump(mode="json")

    def cache_key(self) -> str:
        """Hash of everything that changes a cached, preprocessed scan (keys the disk cache)."""
        blob = json.dumps(
            {
                "modality": self.data.modality,
                "mode": self.data.mode,
                "pre": self.preprocess.model_dump(mode="json"),
                "weights": self.model.weights,
                "version": PRETRAIN_CACHE_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent: Any = PretrainConfig
            for part in loc[:-1]:
                field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
                parent = field.annotation if field is not None else None
            allowed = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{where}: unknown field; allowed: {', '.join(allowed)}{hint}")
        elif err["type"] == "literal_error":
            lines.append(f"{where}: {err['input']!r} is not allowed; allowed: {err.get('ctx', {}).get('expected', '')}")
        elif err["type"] == "missing":
            lines.append(f"{where}: required field missing")
        else:
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid pretraining config {source}: " + "; ".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Paths in a pretraining config file are relative to the file."""
    resolve_relative_path(raw.get("data"), "manifest", base)
    resolve_relative_path(raw.get("data"), "folder", base)
    resolve_relative_path(raw.get("knn"), "manifest", base)
    resolve_relative_path(raw.get("output"), "dir", base)
    resolve_relative_path(raw.get("model"), "weights", base, only_files=True)


def load_pretrain_config(
    path_or_dict: str | Path | dict[str, Any] | PretrainConfig, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """Read and validate a pretraining config.

    Args:
        path_or_dict: a YAML file, a dict with the same structure, or a PretrainConfig (copied).
        overrides: values that replace the file's, by dotted key (``{"train.epochs": 3}``) or nested dict.

    Raises:
        ConfigError: the file is missing or not YAML, or a field is unknown or invalid (with its path and the
            allowed values).
    """
    given = path_or_dict.to_dict() if isinstance(path_or_dict, PretrainConfig) else path_or_dict
    raw, source = raw_config(given, overrides, _resolve_paths)
    try:
        return PretrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source), path=None if source.startswith("(") else source) from None
