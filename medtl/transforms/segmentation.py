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
from medtl.transforms.record import InputRecord
from medtl.weights.sources import AFFINE_KINDS

__all__ = [
    "MASK",
    "CheckMaskd",
    "LoadMaskd",
    "RecordSpacingd",
    "check_mask",
    "ExpectVolumed",
    "build_segmentation_pipeline",
    "build_inference_transforms",
    "patch_size_of",
]

MASK = "mask"
# how far (in voxels of the image's grid) a mask's voxel centre may lie from the image voxel centre it is placed on,
# anywhere in the image: checked at the image's corners, where an error in the affine's rotation or spacing is largest
GEOMETRY_TOLERANCE_VOXELS = 5e-3


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _grid_of(x: Any) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """The 4x4 voxel-to-world affine and the spatial shape as three axes of a channel-first array (a 2D image is
    one slice deep), or None when its affine does not describe its axes."""
    spatial = tuple(int(s) for s in x.shape[1:])
    a = np.asarray(getattr(x, "affine", np.eye(len(spatial) + 1)), dtype=np.float64)
    if len(spatial) == 2 and a.shape == (3, 3):  # x, y in-plane; one slice in z
        lifted = np.eye(4)
        lifted[:2, :2], lifted[:2, 3] = a[:2, :2], a[:2, 2]
        a = lifted
    if len(spatial) not in (2, 3) or a.shape != (4, 4) or not np.isfinite(a).all():
        return None
    return a, (spatial + (1,))[:3]  # type: ignore[return-value]


class _Placement:
    """How a mask's voxels land on an image's grid: image voxel ``c`` is mask voxel ``axes @ c + start`` (a signed
    permutation of the image axes and a whole-voxel shift), and how far that is from exact.

    Attributes:
        axes: (3, 3) signed permutation (columns of one-voxel image axes may be zero: any index fits them).
        start: (3,) the mask voxel of image voxel (0, 0, 0).
        off_voxels: the largest distance, along any image axis and in the image's voxels, between an image voxel
            centre and the centre of the mask voxel placed on it (at the image's corners, where it is largest).
        off_mm: the same distance in mm.
        where: the image voxel where it is largest.
        inside: whether every image voxel has a mask voxel.
    """

    def __init__(
        self,
        image_grid: tuple[np.ndarray, tuple[int, ...]],
        mask_grid: tuple[np.ndarray, tuple[int, ...]],
        axes: np.ndarray,
        start: np.ndarray,
    ) -> None:
        b, shape = image_grid
        a, mask_shape = mask_grid
        self.axes, self.start, self.shape, self.mask_shape = axes, start, shape, mask_shape
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
        placed = axes @ corners + start[:, None]  # the mask voxel of each corner of the image
        world_image = b[:3, :3] @ corners + b[:3, 3:]
        world_mask = a[:3, :3] @ placed + a[:3, 3:]
        diff = world_mask - world_image
        in_voxels = np.abs(np.linalg.solve(b[:3, :3], diff))
        worst = int(np.argmax(in_voxels.max(axis=0)))
        self.off_voxels = float(in_voxels[:, worst].max())
        self.off_mm = float(np.linalg.norm(diff, axis=0).max())
        self.where = tuple(int(v) for v in corners[:, worst])
        self.inside = bool((placed.min(axis=1) >= 0).all() and (placed.max(axis=1) < np.asarray(mask_shape)).all())

    @property
    def exact(self) -> bool:
        return self.inside and self.off_voxels <= GEOMETRY_TOLERANCE_VOXELS

    @property
    def identity(self) -> bool:
        one = np.array([n > 1 for n in self.shape])
        return bool(np.array_equal(self.axes[:, one], np.eye(3)[:, one]) and not self.start.any())


def _placement(image: Any, mask: Any, *, identity: bool = False) -> _Placement | None:
    """The whole-voxel placement of ``mask`` on ``image`` nearest to what their affines say (with ``identity``:
    voxel for voxel), or None when the mask's axes do not run along the image's (another orientation), or an affine
    is missing or singular."""
    image_grid, mask_grid = _grid_of(image), _grid_of(mask)
    if image_grid is None or mask_grid is None:
        return None
    b, shape = image_grid
    a, _ = mask_grid
    try:
        to_mask = np.linalg.inv(a) @ b  # image voxel index -> mask voxel index (continuous)
        np.linalg.inv(b[:3, :3])
    except np.linalg.LinAlgError:
        return None
    if identity:
        return _Placement(image_grid, mask_grid, np.eye(3), np.zeros(3, dtype=np.int64))
    rot = to_mask[:3, :3]
    axes = np.zeros((3, 3))
    used: set[int] = set()
    for i in range(3):
        if shape[i] == 1:  # a one-voxel axis (the depth of a 2D image): only its index 0 is ever placed
            continue
        j = int(np.argmax(np.abs(rot[:, i])))
        if j in used:
            return None
        used.add(j)
        axes[j, i] = 1.0 if rot[j, i] > 0 else -1.0
    start = np.round(to_mask[:3, 3]).astype(np.int64)
    return _Placement(image_grid, mask_grid, axes, start)


def _place(image: Any, mask: Any, placement: _Placement) -> Any:
    """The mask's voxels on the image's grid (nearest neighbour by construction: indexing, no interpolation)."""
    from monai.data import MetaTensor

    data = np.asarray(mask)
    channels = data.shape[0]
    data = data.reshape((channels, *placement.mask_shape))
    ranges = [np.arange(n).reshape([-1 if d == i else 1 for d in range(3)]) for i, n in enumerate(placement.shape)]
    index = [placement.start[j] + sum(int(placement.axes[j, i]) * ranges[i] for i in range(3)) for j in range(3)]
    index = [np.broadcast_to(ix, placement.shape) for ix in index]
    out = data[:, index[0], index[1], index[2]].reshape((channels, *image.shape[1:]))
    dropped = ("affine", "original_affine", "spatial_shape")  # the mask's own grid: no longer true
    meta = {k: v for k, v in getattr(mask, "meta", {}).items() if k not in dropped}
    affine = torch.as_tensor(np.asarray(getattr(image, "affine", np.eye(image.ndim)), dtype=np.float64))
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(out)), affine=affine, meta=meta)


def onto_image_grid(image: Any, mask: Any) -> Any:
    """The mask on the image's voxel grid when its grid is the image's up to the order and direction of the axes
    and a shift by whole voxels (a label map saved in another orientation, or a crop that covers the image), in 2D
    (a one-slice mask on a 2D image) as in 3D.

    Voxel centres are compared where they land, not affine entries: every image voxel centre must be the centre of
    the mask voxel placed on it within :data:`GEOMETRY_TOLERANCE_VOXELS` of the image's voxels, checked at the
    image's eight corners (an affine map's error is largest at a corner). That resampling is exact, so it is
    nearest neighbour without interpolation: axes are permuted, flipped and indexed. Any other grid is returned
    unchanged for :func:`check_mask` to refuse.
    """
    placement = _placement(image, mask)
    if placement is None or not placement.exact:
        return mask
    if placement.identity and tuple(mask.shape[1:]) == tuple(image.shape[1:]):
        return mask
    return _place(image, mask, placement)


def check_mask(image: Any, mask: Any, classes: list[str], image_path: str, mask_path: str) -> torch.Tensor:
    """The mask as a one-channel label map on the image's grid, or a :class:`DataLoadError` naming both files.

    A mask on the image's grid up to axis order, direction and a whole-voxel shift is placed on it exactly
    (:func:`onto_image_grid`); its voxel centres must then lie within :data:`GEOMETRY_TOLERANCE_VOXELS` of the
    image's everywhere in the image.

    Raises:
        DataLoadError: another grid (shape, or voxel centres elsewhere), more than one channel, non-integer or
            unknown label values.
    """
    where = f"mask {mask_path} and image {image_path}"
    fix = f"write the mask on the image's grid (same size and affine), with values 0..{len(classes) - 1}"
    placement = _placement(image, mask)
    if placement is not None and placement.exact:
        mask = onto_image_grid(image, mask)
    else:
        if placement is None or not placement.inside:
            if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
                raise DataLoadError(
                    f"{where} differ in grid: mask {tuple(mask.shape[1:])} voxels, image {tuple(image.shape[1:])}",
                    path=mask_path,
                    fix=fix,
                )
            placement = _placement(image, mask, identity=True)  # the same size: compared voxel for voxel
        if placement is None:
            raise DataLoadError(
                f"{where} differ in geometry: their affines cannot be compared (missing, singular or of another "
                "dimension)",
                path=mask_path,
                fix=fix,
            )
        at = placement.where[: max(2, image.ndim - 1)]
        raise DataLoadError(
            f"{where} differ in geometry: voxel centres lie up to {_number(placement.off_voxels)} voxels "
            f"({_number(placement.off_mm)} mm) apart (at image voxel {at}; at most {GEOMETRY_TOLERANCE_VOXELS:g} voxel "
            "is allowed)",
            path=mask_path,
            fix=fix,
        )
    if mask.shape[0] != 1:
        raise DataLoadError(
            f"{where}: the mask has {mask.shape[0]} channels, a label map has 1", path=mask_path, fix=fix
        )
    values = torch.unique(torch.as_tensor(mask))
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise DataLoadError(
            f"{where}: the mask holds non-finite values (NaN or infinity); a label map holds the integers "
            f"0..{len(classes) - 1}",
            path=mask_path,
            fix="write the mask again as an integer label map",
        )
    bad = [float(v) for v in values if float(v) != round(float(v)) or not 0 <= float(v) < len(classes)]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:8])
        fix = "add the missing classes to segmentation.classes, or fix the mask"
        if bad == [255.0]:  # a binary mask saved as a black-and-white picture
            fix = f"a mask saved as a 0/255 picture: store each class as its value 1..{len(classes) - 1}, not 255"
        raise DataLoadError(
            f"{where}: the mask holds label value(s) {shown}, but segmentation.classes {classes} allows "
            f"0..{len(classes) - 1}",
            path=mask_path,
            fix=fix,
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
            _refuse_non_mask(path)
            d[MASK] = read_scan(path)
        channels = int(d[MASK].shape[0])
        if channels != 1:
            raise DataLoadError(
                f"mask {path} holds {channels} volumes (a 4D file); a label map is one volume of class values "
                f"0..{len(self.classes) - 1}",
                path=path,
                fix="save one 3D label map per image (its classes as values, not one volume per class)",
            )
        return d


def _refuse_non_mask(path: str) -> None:
    """A mask cell must name one file: a label-map NIfTI (or another single label-map file), or a DICOM SEG, which
    the caller has already recognised. A folder or a DICOM image would be read as an image and fail later with a
    message about images.

    Raises:
        DataLoadError: ``path`` is a folder, or a DICOM object other than a Segmentation.
    """
    from pathlib import Path

    from medtl.io.nifti import is_nifti_path

    p = Path(path)
    fix = "name a label-map NIfTI (values 0..K-1 on the image's grid) or a DICOM SEG file in the mask column"
    if p.is_dir():
        raise DataLoadError(f"mask {path} is a folder, not a label map", path=path, fix=fix)
    if not p.is_file() or is_nifti_path(p):
        return
    import pydicom

    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - not DICOM: read_scan says what it is
        return
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop:
        return
    modality = str(ds.get("Modality", "") or "") or "DICOM"
    raise DataLoadError(
        f"mask {path} is a {modality} image (SOP Class {sop}), not a DICOM Segmentation (SEG) or a label map",
        path=path,
        fix=fix,
    )


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


class ExpectVolumed(MapTransform):
    """Refuse a one-slice volume for a 3D segmentation model: padded to a 3D window it would be segmented as a
    slab of zeros around one slice, a silently wrong mask (a 2D image belongs to a 2D run)."""

    def __init__(self) -> None:
        super().__init__([KEY])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        img = data[KEY]
        if img.ndim == 4 and int(img.shape[-1]) == 1:
            meta = getattr(img, "meta", {}) or {}
            path = str(meta.get("filename_or_obj") or data.get("_path") or "the scan")
            raise DataLoadError(
                f"{path} is a single slice (shape {tuple(img.shape[1:])}) but this segmentation model takes 3D volumes",
                path=path,
                fix="give it a volume of several slices, or segment 2D images with a 2D run (data.mode 2d)",
            )
        return dict(data)


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
        field = "segmentation.patch_size" if seg and seg.patch_size and model_dims == 3 else "preprocess.size"
        raise ConfigError(
            f"{field} {size} has {len(size)} value(s), but a {model_dims}D segmentation model needs {model_dims}",
            fix=f"give {model_dims} sizes in voxels, multiples of 32, e.g. {[32] * model_dims}",
        )
    return size


def build_segmentation_pipeline(config: ExperimentConfig, record: InputRecord) -> Pipeline:
    """The joint image + mask transforms of a segmentation experiment (arguments as
    :func:`~medtl.transforms.presets.build_pipeline`; ``record.model_spatial_dims`` must be the scans' own).

    Raises:
        ConfigError: 2.5D mode, a mode that does not fit the scans, sizes of the wrong length.
    """
    from medtl.io import LoadScand

    modality, mode, scan_dims, scan_channels = record.modality, record.mode, record.scan_dims, record.scan_channels
    flat_volumes, in_channels, normalization = record.flat_volumes, record.in_channels, record.normalization
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
    if model_dims == 3:
        pre.insert(3, ExpectVolumed())
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
    if normalization.kind in AFFINE_KINDS:
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
        record=record.with_size(size),
        data_channels=scan_channels,
        description=desc,
    )


def build_inference_transforms(config: ExperimentConfig, record: InputRecord) -> Compose:
    """The image-only preprocessing of a segmentation run, with metadata kept so that MONAI ``Invertd`` can put a
    prediction back on the input's own grid (orientation, spacing, padding and resizing undone).

    Arguments as :func:`build_segmentation_pipeline` (``record``: the run's own, from its preprocessing.json).
    """
    from medtl.io import LoadScand

    modality, mode, scan_dims, scan_channels = record.modality, record.mode, record.scan_dims, record.scan_channels
    flat_volumes, in_channels, normalization = record.flat_volumes, record.in_channels, record.normalization
    model_dims = 3 if mode == "3d" else 2
    size = patch_size_of(config, model_dims)
    t: list[Any] = [
        LoadScand(keys=[KEY], series_key="series"),
        ExpectScand(KEY, dims=scan_dims, channels=scan_channels, flat=flat_volumes, modality=modality),
    ]
    if model_dims == 3:
        t.append(ExpectVolumed())
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
    if normalization.kind in AFFINE_KINDS:
        mean, std = channel_stats(normalization, in_channels)
        t.append(NormalizeIntensityd(KEY, subtrahend=mean, divisor=std, channel_wise=True))
    elif normalization.kind == "zscore_nonzero":
        t.append(NormalizeIntensityd(KEY, nonzero=True, channel_wise=True))
    return Compose(t, log_stats=False)
