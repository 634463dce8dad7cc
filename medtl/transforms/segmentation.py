"""Joint image + mask pipelines for segmentation, built like the classification ones (:mod:`medtl.transforms.presets`).

The same orientation, spacing and intensity handling as classification, applied to the image and its label map
together (the mask always with nearest-neighbour interpolation). Stages:

* ``pre`` (deterministic, cached): load both (the mask: a label-map NIfTI, or a DICOM SEG placed on the image's
  grid by :mod:`medtl.io.dicom_seg`, its segments matched to ``segmentation.classes`` by label), check that the
  mask lies on the image's grid and holds only known label values, reorient and resample both, intensity on the
  image; 2D: resize both to ``preprocess.size``; 3D: keep the whole volume, padded to at least the patch size,
  with the foreground/background voxel indices precomputed for patch sampling.
* ``post_train``: 3D: ``RandCropByPosNegLabeld`` patches (foreground oversampling); flips and affine
  augmentation of both; intensity augmentation of the image; channels and normalisation of the weights.
* ``post_eval``: channels and normalisation only (validation and test run on whole volumes with a sliding window).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    FgBgToIndicesd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    Resized,
    Spacingd,
    SpatialPadd,
    Transposed,
)

from medtl.config import ExperimentConfig
from medtl.errors import ConfigError, DataLoadError
from medtl.transforms.checks import KEY, AdaptChannelsd, ExpectScand, Guard, RandGuard, default_size
from medtl.transforms.presets import Pipeline, _intensity, augmentation, channel_stats
from medtl.weights.sources import Normalization

__all__ = [
    "MASK",
    "CheckMaskd",
    "LoadMaskd",
    "RecordSpacingd",
    "check_mask",
    "build_segmentation_pipeline",
    "build_inference_transforms",
    "patch_size_of",
]

MASK = "mask"
# voxel-to-world agreement needed between a mask and its image, in mm (affine entries)
GEOMETRY_TOLERANCE_MM = 1e-3


def check_mask(image: Any, mask: Any, classes: list[str], image_path: str, mask_path: str) -> torch.Tensor:
    """The mask as a one-channel label map on the image's grid, or a :class:`DataLoadError` naming both files.

    Raises:
        DataLoadError: another grid (shape or affine), more than one channel, non-integer or unknown label values.
    """
    where = f"mask {mask_path} and image {image_path}"
    fix = f"write the mask on the image's grid (same size and affine), with values 0..{len(classes) - 1}"
    if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
        raise DataLoadError(
            f"{where} differ in grid: mask {tuple(mask.shape[1:])} voxels, image {tuple(image.shape[1:])}",
            path=mask_path,
            fix=fix,
        )
    a, b = np.asarray(getattr(mask, "affine", np.eye(4))), np.asarray(getattr(image, "affine", np.eye(4)))
    if a.shape != b.shape or not np.allclose(a, b, atol=GEOMETRY_TOLERANCE_MM, rtol=0):
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        raise DataLoadError(
            f"{where} differ in geometry: their voxel-to-world affines differ by up to {diff:.4g} mm",
            path=mask_path,
            fix=fix,
        )
    if mask.shape[0] != 1:
        raise DataLoadError(
            f"{where}: the mask has {mask.shape[0]} channels, a label map has 1", path=mask_path, fix=fix
        )
    values = torch.unique(torch.as_tensor(mask))
    bad = [float(v) for v in values if float(v) != round(float(v)) or not 0 <= float(v) < len(classes)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:8])
        raise DataLoadError(
            f"{where}: the mask holds label value(s) {shown}, but segmentation.classes {classes} allows "
            f"0..{len(classes) - 1}",
            path=mask_path,
            fix="add the missing classes to segmentation.classes, or fix the mask",
        )
    return mask


class LoadMaskd(MapTransform):
    """Read ``d["mask"]`` (a path) into a label map: a NIfTI (or any scan :func:`~medtl.io.read_scan` reads) as it
    is; a DICOM SEG onto the grid of the already loaded ``d["image"]``, each segment given the label value of the
    class of its SegmentLabel (:func:`medtl.io.dicom_seg.read_dicom_seg`)."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__([MASK])
        self.classes = classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from medtl.io.dicom_seg import is_dicom_seg, read_dicom_seg
        from medtl.io.scan import read_scan

        d = dict(data)
        path = str(d[MASK])
        if is_dicom_seg(path):
            d[MASK] = read_dicom_seg(path, d[KEY], classes=self.classes, image_path=str(d.get("_path") or ""))
        else:
            d[MASK] = read_scan(path)
        return d


class CheckMaskd(MapTransform):
    """Dict transform around :func:`check_mask` (keys ``image`` and ``mask``; paths from ``_path``/``_mask_path``)."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__([MASK])
        self.classes = classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[MASK] = check_mask(d[KEY], d[MASK], self.classes, str(d.get("_path")), str(d.get("_mask_path")))
        return d


class RecordSpacingd(MapTransform):
    """Store the voxel size in mm of the (preprocessed) image under ``spacing``, for distances in mm."""

    def __init__(self) -> None:
        super().__init__([KEY])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[KEY]
        dims = img.ndim - 1
        affine = np.asarray(getattr(img, "affine", np.eye(dims + 1)), dtype=float)
        n = min(dims, affine.shape[0] - 1)
        spacing = [float(np.linalg.norm(affine[:n, i])) for i in range(n)] + [1.0] * (dims - n)
        d["spacing"] = torch.tensor(spacing, dtype=torch.float64)
        return d


def patch_size_of(config: ExperimentConfig, model_dims: int) -> list[int]:
    """The training patch and sliding-window size (2D: the whole image, ``preprocess.size``)."""
    seg = config.segmentation
    size = list(
        (seg.patch_size if seg and seg.patch_size and model_dims == 3 else None) or config.preprocess.size or []
    )
    size = size or default_size(model_dims)
    if len(size) == 1:
        size = size * model_dims
    if len(size) != model_dims:
        raise ConfigError(f"segmentation.patch_size / preprocess.size {size} must have {model_dims} values")
    return size


def build_segmentation_pipeline(
    config: ExperimentConfig,
    *,
    modality: str,
    mode: str,
    scan_dims: int,
    in_channels: int,
    normalization: Normalization,
    scan_channels: int = 1,
    flat_volumes: bool = False,
) -> Pipeline:
    """The joint image + mask transforms of a segmentation experiment (arguments as
    :func:`~medtl.transforms.presets.build_pipeline`).

    Raises:
        ConfigError: 2.5D mode, a mode that does not fit the scans, sizes of the wrong length.
    """
    from medtl.io import LoadScand

    seg = config.segmentation
    if seg is None:
        raise ConfigError("build_segmentation_pipeline needs a segmentation section in the config")
    if mode == "2.5d":
        raise ConfigError("segmentation runs in data.mode 2d or 3d; 2.5d is for classification")
    model_dims = 3 if mode == "3d" else 2
    if model_dims != scan_dims:
        raise ConfigError(f"data.mode {mode!r} does not fit {scan_dims}D scans; use data.mode {scan_dims}d")
    size = patch_size_of(config, model_dims)
    keys = [KEY, MASK]
    pre: list[Any] = [
        LoadScand(keys=[KEY], series_key="series"),
        LoadMaskd(list(seg.classes)),
        ExpectScand(KEY, dims=scan_dims, channels=scan_channels, flat=flat_volumes, modality=modality),
        ExpectScand(MASK, dims=scan_dims, channels=1, flat=flat_volumes),
        CheckMaskd(list(seg.classes)),
    ]
    desc: dict[str, Any] = {"modality": modality, "mode": mode, "task": "segmentation"}
    if scan_dims == 3:
        if config.preprocess.orientation:
            pre.append(
                Orientationd(keys, axcodes=config.preprocess.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
            )
            desc["orientation"] = config.preprocess.orientation
        if config.preprocess.spacing:
            pixdim = list(config.preprocess.spacing)
            pixdim = pixdim * 3 if len(pixdim) == 1 else pixdim
            pre.append(Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")))
            desc["spacing_mm"] = pixdim
    else:
        pre.append(Transposed(keys, indices=(0, 2, 1)))
        desc["layout"] = "(channel, row, column) as displayed"
    intensity, idesc = _intensity(modality, normalization, config)
    pre += intensity
    desc["intensity"] = idesc
    if model_dims == 2:
        pre.append(Resized(keys, spatial_size=size, mode=("area", "nearest")))
        desc["size"] = size
    else:
        # whole volumes; at least one patch in size (padding of air after the CT window: 0)
        pre.append(SpatialPadd(keys, spatial_size=size))
        desc["patch_size"] = size
    pre.append(RecordSpacingd())
    pre.append(EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False))
    pre.append(EnsureTyped(MASK, data_type="tensor", dtype=torch.int64, track_meta=False))
    if model_dims == 3:
        pre.append(FgBgToIndicesd(MASK, fg_postfix="_fg", bg_postfix="_bg"))

    crop: list[Any] = []
    if model_dims == 3:
        pos = seg.foreground_ratio
        crop.append(
            RandCropByPosNegLabeld(
                keys,
                label_key=MASK,
                spatial_size=size,
                pos=pos if pos > 0 else 0.0,
                neg=1.0 - pos,
                num_samples=seg.samples_per_scan,
                fg_indices_key=f"{MASK}_fg",
                bg_indices_key=f"{MASK}_bg",
                allow_smaller=False,
            )
        )
        desc["patches"] = f"{seg.samples_per_scan} per scan, {pos:g} centred on foreground"
    aug = augmentation(config, model_dims, mask_key=MASK)
    desc["augment"] = [type(t).__name__ for t in aug]
    final: list[Any] = [AdaptChannelsd(KEY, in_channels)]
    if normalization.kind == "imagenet":
        mean, std = channel_stats(normalization, in_channels)
        final.append(NormalizeIntensityd(KEY, subtrahend=mean, divisor=std, channel_wise=True))
    elif normalization.kind == "zscore_nonzero":
        final.append(NormalizeIntensityd(KEY, nonzero=True, channel_wise=True))
    final.append(EnsureTyped(KEY, data_type="tensor", dtype=torch.float32, track_meta=False))
    final.append(EnsureTyped(MASK, data_type="tensor", dtype=torch.int64, track_meta=False))
    desc["normalization"] = normalization.to_dict()
    desc["in_channels"] = in_channels
    desc["classes"] = list(seg.classes)
    return Pipeline(
        pre=Compose([Guard(Compose(pre, log_stats=False), "preprocessing")], log_stats=False),
        post_train=Compose([RandGuard(Compose(crop + aug + final, log_stats=False), "augmentation")], log_stats=False),
        post_eval=Compose([Guard(Compose(final, log_stats=False), "normalisation")], log_stats=False),
        mode=mode,
        modality=modality,
        model_spatial_dims=model_dims,
        data_channels=scan_channels,
        in_channels=in_channels,
        size=size,
        normalization=normalization,
        description=desc,
    )


def build_inference_transforms(
    config: ExperimentConfig,
    *,
    modality: str,
    mode: str,
    scan_dims: int,
    in_channels: int,
    normalization: Normalization,
    scan_channels: int = 1,
    flat_volumes: bool = False,
) -> Compose:
    """The image-only preprocessing of a segmentation run, with metadata kept so that MONAI ``Invertd`` can put a
    prediction back on the input's own grid (orientation, spacing, padding and resizing undone).

    Arguments as :func:`build_segmentation_pipeline`.
    """
    from medtl.io import LoadScand

    model_dims = 3 if mode == "3d" else 2
    size = patch_size_of(config, model_dims)
    t: list[Any] = [
        LoadScand(keys=[KEY], series_key="series"),
        ExpectScand(KEY, dims=scan_dims, channels=scan_channels, flat=flat_volumes, modality=modality),
    ]
    if scan_dims == 3:
        if config.preprocess.orientation:
            t.append(
                Orientationd(KEY, axcodes=config.preprocess.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
            )
        if config.preprocess.spacing:
            pixdim = list(config.preprocess.spacing)
            t.append(Spacingd(KEY, pixdim=pixdim * 3 if len(pixdim) == 1 else pixdim, mode="bilinear"))
    else:
        t.append(Transposed(KEY, indices=(0, 2, 1)))
    t += _intensity(modality, normalization, config)[0]
    t.append(Resized(KEY, spatial_size=size, mode="area") if model_dims == 2 else SpatialPadd(KEY, spatial_size=size))
    t.append(AdaptChannelsd(KEY, in_channels))
    if normalization.kind == "imagenet":
        mean, std = channel_stats(normalization, in_channels)
        t.append(NormalizeIntensityd(KEY, subtrahend=mean, divisor=std, channel_wise=True))
    elif normalization.kind == "zscore_nonzero":
        t.append(NormalizeIntensityd(KEY, nonzero=True, channel_wise=True))
    return Compose(t, log_stats=False)
