"""MONAI dict pipelines built from the experiment config and the weight source's expected input.

A pipeline has two stages:

* ``pre`` (deterministic, cached): load the scan, reorient and resample volumes, modality-aware intensity
  (CT: HU window then scale to [0, 1]; MR: z-score over non-zero voxels; radiographs: percentiles to
  [0, 1]) and resize or crop to the model's input size.
* ``post`` (every time a sample is drawn): augmentation for training only, then the channel count the
  model expects and the normalisation its weights were trained with (ImageNet mean/std, or MedicalNet's
  z-score over non-zero voxels). The normalisation comes from the weight source record, never from a
  constant here.

For 2.5D, ``pre`` keeps the volume (resized in-plane only) and ``post`` works on the 2D slices that
:mod:`medtl.data.dataset` cuts from it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandShiftIntensityd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transform,
    Transposed,
)

from medtl.config import ExperimentConfig
from medtl.errors import ConfigError, DataLoadError, MedtlError

__all__ = [
    "NormalizationSpec",
    "Pipeline",
    "AdaptChannels",
    "AdaptChannelsd",
    "ChannelNormalize",
    "ChannelNormalized",
    "Guard",
    "normalization_for",
    "modality_from_meta",
    "default_size",
    "build_pipeline",
    "unwrap_load_error",
]

log = logging.getLogger(__name__)

KEY = "image"
XR_MODALITIES = {"CR", "DX", "DR", "MG", "XA", "RF", "RG", "PX", "IO", "XR", "OT", "SC"}


@dataclass(frozen=True)
class NormalizationSpec:
    """What the weights expect: ``kind`` in imagenet | zscore_nonzero | none, with per-channel mean/std."""

    kind: str = "none"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": list(self.mean), "std": list(self.std)}


def normalization_for(weights: str, override: str = "auto") -> NormalizationSpec:
    """The normalisation of a weight source (``override`` from the config wins unless ``auto``).

    Weight sources are looked up in :mod:`medtl.weights`; a file path or ``scratch`` gives ``none``
    unless the registry knows better.
    """
    imagenet = NormalizationSpec("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if override == "none":
        return NormalizationSpec("none")
    if override == "zscore_nonzero":
        return NormalizationSpec("zscore_nonzero")
    spec = NormalizationSpec("none")
    try:
        from medtl.weights import get_weight_source

        src = get_weight_source(weights)
        norm = getattr(src, "normalization", None)
        if norm is not None:
            spec = NormalizationSpec(
                str(norm.kind),
                tuple(float(v) for v in (norm.mean or ())),
                tuple(float(v) for v in (norm.std or ())),
            )
    except (ImportError, MedtlError, ValueError, KeyError, LookupError) as exc:
        log.debug("no weight source record for %r (%s): no normalisation from the weights", weights, exc)
    if override == "imagenet":
        return spec if spec.kind == "imagenet" and spec.mean else imagenet
    if spec.kind == "imagenet" and not spec.mean:
        return imagenet
    return spec


def modality_from_meta(meta: Mapping[str, Any], spatial_dims: int) -> str:
    """Map a scan's DICOM Modality to CT, MR or XR; None when it cannot tell."""
    m = str(meta.get("modality") or "").upper()
    if m == "CT" or meta.get("units") == "HU":
        return "CT"
    if m in ("MR", "MRI"):
        return "MR"
    if m in XR_MODALITIES or (not m and spatial_dims == 2):
        return "XR"
    raise ConfigError(
        f"cannot tell the modality of {meta.get('filename_or_obj', 'the first scan')} (DICOM Modality {m!r}); "
        "set data.modality to CT, MR or XR in the config"
    )


def default_size(spatial_dims: int) -> list[int]:
    return [224, 224] if spatial_dims == 2 else [64, 64, 64]


class Guard(Transform):
    """Run a transform; turn any failure into a :class:`DataLoadError` naming the scan's path and manifest row."""

    def __init__(self, transform: Any, stage: str) -> None:
        self.transform = transform
        self.stage = stage

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Guard:
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed, state=state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        try:
            return self.transform(data)
        except DataLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a sample is reported with its file
            root: BaseException = exc
            while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
                root = root.__cause__ or root.__context__  # type: ignore[assignment]
            path = data.get("_path", data.get(KEY)) if isinstance(data, Mapping) else None
            row = data.get("row") if isinstance(data, Mapping) else None
            where = f" (manifest row {row})" if row not in (None, "") else ""
            msg = " ".join(str(root).split())[:500]
            raise DataLoadError(
                f"scan {path}{where} failed in {self.stage}: {type(root).__name__}: {msg}",
                path=None if path is None else str(path),
                fix="fix or remove this row of the manifest",
            ) from exc


class RandGuard(Guard, Randomizable):
    """A :class:`Guard` around random transforms.

    It is ``Randomizable`` so that MONAI's seeding (``Compose.set_random_state``, ``DataLoader``) reaches the
    transforms inside: a plain ``Transform`` is skipped, which would leave augmentation unseeded and runs
    irreproducible. (Deterministic stages keep the plain Guard, so ``PersistentDataset`` still caches them.)
    """

    def randomize(self, data: Any = None) -> None:
        """The wrapped transforms draw their own parameters."""


def unwrap_load_error(exc: BaseException) -> BaseException:
    """The :class:`DataLoadError` inside MONAI's ``RuntimeError("applying transform ...")`` wrappers, if any."""
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, DataLoadError):
            return cur
        cur = cur.__cause__
    return exc


class AdaptChannels(Transform):
    """Give an image ``channels`` channels: repeat a single channel, or average several into one."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        if c == self.channels:
            return img
        if c == 1:
            return img.repeat(self.channels, *([1] * (img.ndim - 1)))
        if self.channels == 1:
            return img.mean(dim=0, keepdim=True)
        raise DataLoadError(
            f"image has {c} channels and the model expects {self.channels}; set model.in_channels to match the images"
        )


class AdaptChannelsd(MapTransform):
    """Dict twin of :class:`AdaptChannels`."""

    def __init__(self, keys: Any, channels: int) -> None:
        super().__init__(keys)
        self.op = AdaptChannels(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.op(d[k])
        return d


class ChannelNormalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel; one value of mean/std is used for every channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.as_tensor(list(mean), dtype=torch.float32)
        self.std = torch.as_tensor(list(std), dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        mean, std = self.mean, self.std
        if len(mean) != c:
            # a model adapted to another channel count: the average statistics, as timm does
            mean, std = mean.mean().repeat(c), std.mean().repeat(c)
        shape = (c,) + (1,) * (img.ndim - 1)
        return (img - mean.view(shape).to(img.dtype)) / std.view(shape).to(img.dtype)


class ChannelNormalized(MapTransform):
    """Dict twin of :class:`ChannelNormalize`."""

    def __init__(self, keys: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(keys)
        self.op = ChannelNormalize(mean, std)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.op(d[k])
        return d


@dataclass
class Pipeline:
    """The transforms of one experiment and what they were built from (recorded in the model card)."""

    pre: Compose
    post_train: Compose
    post_eval: Compose
    mode: str
    modality: str
    model_spatial_dims: int
    data_channels: int
    in_channels: int
    size: list[int]
    normalization: NormalizationSpec
    description: dict[str, Any] = field(default_factory=dict)


def _intensity(modality: str, norm: NormalizationSpec, config: ExperimentConfig) -> tuple[list[Any], str]:
    pre = config.preprocess
    if modality == "CT":
        lo, hi = pre.ct_window
        return [ScaleIntensityRanged(KEY, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)], (
            f"CT window [{lo:g}, {hi:g}] HU -> [0, 1]"
        )
    if modality == "MR" and norm.kind != "imagenet":
        return [NormalizeIntensityd(KEY, nonzero=True, channel_wise=True)], "MR z-score over non-zero voxels"
    lo, hi = pre.xr_percentiles
    return [ScaleIntensityRangePercentilesd(KEY, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)], (
        f"percentiles [{lo:g}, {hi:g}] -> [0, 1]"
    )


def build_pipeline(
    config: ExperimentConfig,
    *,
    modality: str,
    mode: str,
    scan_dims: int,
    scan_channels: int = 1,
    in_channels: int | None = None,
    normalization: NormalizationSpec | None = None,
) -> Pipeline:
    """Build the transforms of an experiment.

    Args:
        config: the experiment config.
        modality: CT, MR or XR (already resolved from ``auto``).
        mode: 2d, 3d or 2.5d (resolved).
        scan_dims: spatial dims of the scans on disk (2 or 3).
        scan_channels: channels of the scans as read (1 for grey, 3 for RGB captures).
        in_channels: channels of the model input (default: config, else what the weights expect).
        normalization: the weights' normalisation (default: looked up from ``config.model.weights``).

    Returns:
        A :class:`Pipeline`.
    """
    from medtl.io import LoadScand

    norm = normalization or normalization_for(config.model.weights, config.preprocess.normalization)
    model_dims = 3 if mode == "3d" else 2
    if mode in ("3d", "2.5d") and scan_dims != 3:
        raise ConfigError(f"data.mode {mode!r} needs 3D scans, but the scans are {scan_dims}D; use mode 2d")
    if mode == "2d" and scan_dims != 2:
        raise ConfigError("data.mode '2d' needs 2D images, but the scans are 3D; use mode 3d or 2.5d")
    size = list(config.preprocess.size or default_size(model_dims))
    depth = -1  # 2.5D: keep the slices (or resample their count to a third size value)
    if mode == "2.5d" and len(size) == 3:
        size, depth = size[:2], size[2]
    if len(size) == 1:
        size = size * model_dims
    if len(size) != model_dims:
        raise ConfigError(f"preprocess.size {size} must have {model_dims} values for mode {mode!r}")
    data_channels = 3 if (mode == "2.5d" and config.data.neighbor_slices) else scan_channels
    if in_channels is None:
        in_channels = config.model.in_channels
    if in_channels is None:
        if norm.kind == "imagenet" or mode == "2.5d" and config.data.neighbor_slices:
            in_channels = 3
        else:
            in_channels = 1 if data_channels == 1 else data_channels

    pre: list[Any] = [LoadScand(keys=[KEY], series_key="series")]
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

    aug: list[Any] = []
    a = config.augment
    if a.enabled:
        for axis in a.flip_axes:
            if axis >= model_dims:
                raise ConfigError(
                    f"augment.flip_axes has axis {axis}; {model_dims}D samples have axes 0..{model_dims - 1}"
                )
            if a.flip_prob > 0:
                aug.append(RandFlipd(KEY, prob=a.flip_prob, spatial_axis=axis))
        if a.affine_prob > 0 and (a.rotate_deg > 0 or a.zoom > 0):
            theta = float(np.deg2rad(a.rotate_deg))
            rotate = (theta,) if model_dims == 2 else (0.0, 0.0, theta)
            aug.append(
                RandAffined(
                    KEY,
                    prob=a.affine_prob,
                    rotate_range=rotate,
                    scale_range=(a.zoom,) * model_dims,
                    padding_mode="border",
                    mode="bilinear",
                )
            )
        if a.intensity_shift > 0:
            aug.append(RandShiftIntensityd(KEY, offsets=a.intensity_shift, prob=0.5))
        if a.noise_std > 0:
            aug.append(RandGaussianNoised(KEY, std=a.noise_std, prob=0.5))
    desc["augment"] = [type(t).__name__ for t in aug]

    final: list[Any] = [AdaptChannelsd(KEY, in_channels)]
    if norm.kind == "imagenet":
        final.append(ChannelNormalized(KEY, norm.mean, norm.std))
    elif norm.kind == "zscore_nonzero":
        final.append(NormalizeIntensityd(KEY, nonzero=True, channel_wise=True))
    final.append(EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False))
    desc["normalization"] = norm.to_dict()
    desc["in_channels"] = in_channels
    return Pipeline(
        # log_stats=False: the Guard reports the failing scan; MONAI would also dump the whole sample dict
        pre=Compose([Guard(Compose(pre, log_stats=False), "preprocessing")], log_stats=False),
        post_train=Compose([RandGuard(Compose(aug + final, log_stats=False), "augmentation")], log_stats=False),
        post_eval=Compose([Guard(Compose(final, log_stats=False), "normalisation")], log_stats=False),
        mode=mode,
        modality=modality,
        model_spatial_dims=model_dims,
        data_channels=data_channels,
        in_channels=in_channels,
        size=size,
        normalization=norm,
        description=desc,
    )
