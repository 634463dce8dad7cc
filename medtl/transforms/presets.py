"""MONAI dict pipelines built from the experiment config and the weight source's expected input.

A pipeline has two stages:

* ``pre`` (deterministic, cached): load the scan, reorient and resample volumes, modality-aware intensity
  (CT: HU window then scale to [0, 1]; MR: z-score over non-zero voxels; radiographs: percentiles to
  [0, 1]) and resize or crop to the model's input size.
* ``post`` (every time a sample is drawn): augmentation for training only, then the channel count the
  model expects and the normalisation its weights were trained with (ImageNet mean/std, torchxrayvision's
  [-1024, 1024] range, or MedicalNet's z-score over non-zero voxels). The normalisation comes from the weight
  source record, never from a constant here.

For 2.5D, ``pre`` keeps the volume (resized in-plane only) and ``post`` works on the 2D slices that
:mod:`medtl.data.dataset` cuts from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandShiftIntensityd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transposed,
)

from medtl.config import ExperimentConfig
from medtl.errors import ConfigError
from medtl.transforms.checks import (
    KEY,
    AdaptChannels,
    AdaptChannelsd,
    ExpectScan,
    ExpectScand,
    Guard,
    ModelInputd,
    RandFlipTensord,
    RandGuard,
    default_size,
    modality_class,
    modality_from_meta,
    unwrap_load_error,
)
from medtl.transforms.record import InputRecord
from medtl.weights.sources import AFFINE_KINDS, Normalization

__all__ = [
    "Pipeline",
    "AdaptChannels",
    "AdaptChannelsd",
    "ExpectScan",
    "ExpectScand",
    "Guard",
    "channel_stats",
    "modality_class",
    "modality_from_meta",
    "default_size",
    "flip_axes",
    "build_pipeline",
    "unwrap_load_error",
]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The transforms of one experiment and what they were built from (recorded in the model card).

    Attributes:
        pre: deterministic preprocessing (cached).
        post_train: augmentation, channels and normalisation of training samples.
        post_eval: channels and normalisation of validation and inference samples.
        record: the input record the pipeline was built from, with the model's input size fixed.
        data_channels: channels of a sample before channel adaptation (3 for 2.5D neighbour slices).
        description: what each step does, for the model card.
    """

    pre: Compose
    post_train: Compose
    post_eval: Compose
    record: InputRecord
    data_channels: int
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.record.mode

    @property
    def modality(self) -> str:
        return self.record.modality

    @property
    def model_spatial_dims(self) -> int:
        return self.record.model_spatial_dims

    @property
    def in_channels(self) -> int:
        return self.record.in_channels

    @property
    def normalization(self) -> Normalization:
        return self.record.normalization

    @property
    def size(self) -> list[int]:
        return list(self.record.size or ())


def _intensity(modality: str, norm: Normalization, config: ExperimentConfig) -> tuple[list[Any], str]:
    """The intensity scaling of ``preprocess.intensity`` (``auto``: by modality and weights) and its description."""
    pre = config.preprocess
    how = pre.intensity
    if how == "auto":
        # MR: percentiles whatever the weights, so a pretrained arm and its scratch control differ only in their
        # weights (a fairness choice: accuracy-neutral on bench_transfer's MNI task, benchmarks/README.md);
        # MedicalNet's z-score still follows as the normalisation its weights expect
        how = "window" if modality == "CT" else "percentiles"
    if how == "window":
        lo, hi = pre.ct_window
        return [ScaleIntensityRanged(KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)], (
            f"{'CT ' if modality == 'CT' else ''}window [{lo:g}, {hi:g}]{' HU' if modality == 'CT' else ''} -> [0, 1]"
        )
    if how == "range":
        lo, hi = pre.intensity_range
        if hi <= lo:
            raise ConfigError(
                f"preprocess.intensity_range {list(pre.intensity_range)} must be [low, high] with low < high",
                fix="e.g. intensity_range: [0, 255] for 8-bit images",
            )
        return [ScaleIntensityRanged(KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)], (
            f"fixed range [{lo:g}, {hi:g}] -> [0, 1]"
        )
    if how == "zscore_nonzero":
        return [NormalizeIntensityd(KEY, nonzero=True, channel_wise=True)], f"{modality} z-score over non-zero voxels"
    lo, hi = pre.xr_percentiles
    return [ScaleIntensityRangePercentilesd(KEY, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)], (
        f"percentiles [{lo:g}, {hi:g}] -> [0, 1]"
    )


def channel_stats(norm: Normalization, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``norm`` (``imagenet``, or a ``range`` stored as one) for a model with ``channels``
    inputs.

    A model adapted to another channel count than the weights' gets the average statistics, as timm does.
    """
    mean, std = list(norm.mean or ()), list(norm.std or ())
    if len(mean) != channels:
        mean, std = [float(np.mean(mean))] * channels, [float(np.mean(std))] * channels
    return mean, std


# anatomical flips -> spatial axis of a sample: 2D/2.5D samples are (rows, columns) as displayed; 3D volumes RAS
_FLIP_AXES = {
    2: {"left_right": 1, "anterior_posterior": 0, "superior_inferior": 0},
    3: {"left_right": 0, "anterior_posterior": 1, "superior_inferior": 2},
}


def flip_axes(config: ExperimentConfig, model_dims: int) -> list[int]:
    """The spatial axes ``augment.flips`` (or the deprecated ``augment.flip_axes``) flip in ``model_dims``-D samples.

    Raises:
        ConfigError: a raw axis out of range.
    """
    a = config.augment
    if a.flip_axes is not None:
        for axis in a.flip_axes:
            if not 0 <= axis < model_dims:
                raise ConfigError(
                    f"augment.flip_axes has axis {axis}; {model_dims}D samples have axes 0..{model_dims - 1}",
                    fix="name the flips instead: augment.flips: [left_right]",
                )
        return list(dict.fromkeys(a.flip_axes))
    return list(dict.fromkeys(_FLIP_AXES[model_dims][name] for name in a.flips))


def geometric_augmentation(
    config: ExperimentConfig, model_dims: int, *, mask_key: str | None = None, plain: bool = False, **affine: Any
) -> list[Any]:
    """The flips, rotation and zoom of ``augment``; with ``mask_key`` they move the mask too (nearest).

    ``plain``: the flips keep plain tensors with a mask too (a batch, never inverted); ``affine``: more arguments of
    ``RandAffined`` (``device``, ``spatial_size`` and ``cache_grid`` for a batch on a GPU).
    """
    aug: list[Any] = []
    a = config.augment
    keys = [KEY] if mask_key is None else [KEY, mask_key]
    for axis in flip_axes(config, model_dims):
        if a.flip_prob > 0:
            # classification samples are plain tensors and are never inverted: the flip keeps them plain (RandFlipd's
            # MetaTensor bookkeeping was the largest per-sample cost); a mask keeps MONAI's RandFlipd
            flip = RandFlipd if mask_key is not None and not plain else RandFlipTensord
            aug.append(flip(keys, prob=a.flip_prob, spatial_axis=axis))
    if a.affine_prob > 0 and (a.rotate_deg > 0 or a.zoom > 0):
        theta = float(np.deg2rad(a.rotate_deg))
        rotate = (theta,) if model_dims == 2 else (0.0, 0.0, theta)
        aug.append(
            RandAffined(
                keys,
                prob=a.affine_prob,
                rotate_range=rotate,
                scale_range=(a.zoom,) * model_dims,
                padding_mode="border" if mask_key is None else ("border", "zeros"),
                mode="bilinear" if mask_key is None else ("bilinear", "nearest"),
                **affine,
            )
        )
    return aug


def augmentation(config: ExperimentConfig, model_dims: int, *, mask_key: str | None = None) -> list[Any]:
    """The training augmentation of each sample; with ``mask_key`` the geometric transforms move the mask too
    (nearest). With ``augment.device: gpu`` the geometric part runs on the batch (:mod:`medtl.transforms.batch`)."""
    aug: list[Any] = []
    a = getattr(config, "augment", None)
    if a is None or not a.enabled:  # a pretraining config: its views are its own augmentation
        return aug
    if config.preprocess.orientation is None and model_dims == 3 and a.flip_axes is None and a.flips:
        log.warning("augment.flips in 3D assume RAS volumes, but preprocess.orientation is None: axes are as stored")
    if a.device != "gpu":
        aug += geometric_augmentation(config, model_dims, mask_key=mask_key)
    if a.intensity_shift > 0:
        aug.append(RandShiftIntensityd(KEY, offsets=a.intensity_shift, prob=0.5))
    if a.noise_std > 0:
        aug.append(RandGaussianNoised(KEY, std=a.noise_std, prob=0.5))
    return aug


def build_pipeline(config: Any, record: InputRecord) -> Pipeline:
    """Build the transforms of an experiment.

    Args:
        config: the experiment config (its ``preprocess``, ``augment`` and ``data`` sections are read), or a
            pretraining config (no ``augment``: no augmentation).
        record: the resolved input (:func:`medtl.train.experiment.resolve_input_record`, or a run's
            ``preprocessing.json``): modality, mode, scan dims and channels, the model's channels and the
            normalisation its weights expect.

    Returns:
        A :class:`Pipeline` (its ``record`` with the model's input size).

    Raises:
        ConfigError: a mode that does not fit the scans, a size of the wrong length, a flip axis out of range.
    """
    from medtl.io import LoadScand

    modality, mode, scan_dims, scan_channels = record.modality, record.mode, record.scan_dims, record.scan_channels
    flat_volumes, in_channels = record.flat_volumes, record.in_channels
    norm = record.normalization
    model_dims = record.model_spatial_dims
    if mode in ("3d", "2.5d") and scan_dims != 3:
        what = "volumes of one slice" if flat_volumes else f"{scan_dims}D"
        raise ConfigError(f"data.mode {mode!r} needs 3D scans, but the scans are {what}; use data.mode 2d")
    if mode == "2d" and scan_dims != 2:
        raise ConfigError("data.mode '2d' needs 2D images, but the scans are 3D; use data.mode 3d or 2.5d")
    if scan_dims == 3 and scan_channels > 1 and in_channels != scan_channels:
        raise ConfigError(
            f"the volumes have {scan_channels} channels (a 4D NIfTI holds one volume per channel) and the model "
            f"takes {in_channels}; set model.in_channels: {scan_channels} to use every volume as a channel, "
            "or extract one volume per file"
        )
    size = list(config.preprocess.size or default_size(model_dims))
    depth = -1  # 2.5D: keep the slices (or resample their count to a third size value)
    if mode == "2.5d" and len(size) == 3:
        size, depth = size[:2], size[2]
    if len(size) == 1:
        size = size * model_dims
    if len(size) != model_dims:
        raise ConfigError(f"preprocess.size {size} must have {model_dims} values for mode {mode!r}")
    data_channels = 3 if (mode == "2.5d" and getattr(config.data, "neighbor_slices", False)) else scan_channels

    pre: list[Any] = [
        LoadScand(keys=[KEY], series_key="series"),
        ExpectScand(KEY, dims=scan_dims, channels=scan_channels, flat=flat_volumes, modality=modality),
    ]
    desc: dict[str, Any] = {"modality": modality, "mode": mode}
    if scan_dims == 3:
        if config.preprocess.orientation:
            pre.append(
                Orientationd(KEY, axcodes=config.preprocess.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
            )
            desc["orientation"] = config.preprocess.orientation
        if config.preprocess.spacing:
            pixdim = list(config.preprocess.spacing)
            if len(pixdim) == 1:
                pixdim = pixdim * 3
            pre.append(Spacingd(KEY, pixdim=pixdim, mode="bilinear"))
            desc["spacing_mm"] = pixdim
    if scan_dims == 2:
        # read_scan's 2D layout is (C, columns, rows); 2D networks (and ImageNet's weights) expect the image as
        # displayed, (C, rows, columns)
        pre.append(Transposed(KEY, indices=(0, 2, 1)))
        desc["layout"] = "(channel, row, column) as displayed"
    intensity, idesc = _intensity(modality, norm, config)
    pre += intensity
    desc["intensity"] = idesc
    target = size + [depth] if mode == "2.5d" else size
    if config.preprocess.resize == "resize":
        pre.append(Resized(KEY, spatial_size=target, mode="area"))
    else:
        pre.append(ResizeWithPadOrCropd(KEY, spatial_size=target))
    desc["size"] = size
    if mode == "2.5d":
        desc["slices"] = "all" if depth == -1 else f"volume resampled to {depth} slices"
    desc["resize"] = config.preprocess.resize
    pre.append(EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False))

    aug = augmentation(config, model_dims)
    desc["augment"] = [type(t).__name__ for t in aug]
    # plain tensors from here on (ModelInputd drops the MetaTensor a random transform may have made): the
    # normalisation runs on every sample of every epoch, and on a MetaTensor each operation copies metadata
    final: list[Any]
    if norm.kind in AFFINE_KINDS:
        mean, std = channel_stats(norm, in_channels)
        final = [ModelInputd(KEY, in_channels, mean, std)]
    elif norm.kind == "zscore_nonzero":
        final = [
            ModelInputd(KEY, in_channels),
            NormalizeIntensityd(KEY, nonzero=True, channel_wise=True),
            EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    else:
        final = [ModelInputd(KEY, in_channels)]
    desc["normalization"] = norm.to_dict()
    desc["in_channels"] = in_channels
    return Pipeline(
        # log_stats=False: the Guard reports the failing scan; MONAI would also dump the whole sample dict
        pre=Compose([Guard(Compose(pre, log_stats=False), "preprocessing")], log_stats=False),
        post_train=Compose([RandGuard(Compose(aug + final, log_stats=False), "augmentation")], log_stats=False),
        post_eval=Compose([Guard(Compose(final, log_stats=False), "normalisation")], log_stats=False),
        record=record.with_size(size),
        data_channels=data_channels,
        description=desc,
    )
