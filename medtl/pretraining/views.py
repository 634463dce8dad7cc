"""Random views of a preprocessed scan for self-supervised pretraining, built from MONAI transforms.

Two kinds, both working on the cached ``[0, 1]`` (CT window, radiograph percentiles) or z-scored (MR) scan and
ending with the channel count and normalisation the encoder's weights expect (the pipeline's ``post_eval``):

- :class:`ContrastiveViews` (SimCLR): two independent views of one scan: a random resized crop (2D or 3D), flips,
  a small affine, intensity scale and shift, Gaussian noise and blur. No colour jitter: CT values are
  Hounsfield units, and the grey levels of a radiograph carry meaning.
- :class:`RestorationViews` (Models Genesis, Zhou et al. 2019): a random crop and flips give the target; the
  input is the target corrupted by local voxel shuffling (MONAI ``RandCoarseShuffle``), a random monotone
  non-linear intensity map (``RandHistogramShift``) and in- or out-painting with noise (``RandCoarseDropout``
  with the holes dropped, or kept and the rest dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    OneOf,
    RandAffined,
    RandCoarseDropoutd,
    RandCoarseShuffled,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    Randomizable,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
)

from medtl.errors import ConfigError
from medtl.pretraining.config import GenesisConfig, ViewsConfig

__all__ = ["ContrastiveViews", "RestorationViews", "crop_transforms"]

KEY = "image"
TARGET = "target"


def crop_transforms(views: ViewsConfig, size: Sequence[int], keys: Sequence[str] = (KEY,)) -> list[Any]:
    """Random resized crop to ``size`` and flips (shared by both kinds of views)."""
    dims = len(size)
    lo, hi = views.crop_scale
    out: list[Any] = [
        RandScaleCropd(keys, roi_scale=lo, max_roi_scale=hi, random_size=True),
        Resized(keys, spatial_size=list(size), mode="bilinear" if dims == 2 else "trilinear", anti_aliasing=False),
    ]
    for axis in views.flip_axes:
        if axis >= dims:
            raise ConfigError(f"views.flip_axes has axis {axis}; {dims}D views have axes 0..{dims - 1}")
        if views.flip_prob > 0:
            out.append(RandFlipd(keys, prob=views.flip_prob, spatial_axis=axis))
    return out


class _Views(Randomizable):
    """Base: a MONAI ``Compose`` of random transforms, then the encoder's channels and normalisation."""

    def __init__(self, augment: Compose, final: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.augment = augment
        self.final = final

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _Views:
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The transforms inside draw their own parameters."""

    def _finish(self, img: torch.Tensor) -> torch.Tensor:
        out = self.final({KEY: img})[KEY]
        return torch.as_tensor(out).as_subclass(torch.Tensor).float().contiguous()


class ContrastiveViews(_Views):
    """Two independent random views of a scan: ``{"view1": tensor, "view2": tensor}``.

    Args:
        views: the view settings.
        size: spatial size of each view.
        final: the pipeline's channel adaptation and normalisation (a dict transform on ``"image"``).
    """

    def __init__(
        self, views: ViewsConfig, size: Sequence[int], final: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        dims = len(size)
        t = crop_transforms(views, size)
        if views.affine_prob > 0 and (views.rotate_deg > 0 or views.zoom > 0):
            theta = float(np.deg2rad(views.rotate_deg))
            t.append(
                RandAffined(
                    KEY,
                    prob=views.affine_prob,
                    rotate_range=(theta,) if dims == 2 else (theta, theta, theta),
                    scale_range=(views.zoom,) * dims,
                    padding_mode="border",
                    mode="bilinear",
                )
            )
        if views.intensity_scale > 0:
            t.append(RandScaleIntensityd(KEY, factors=views.intensity_scale, prob=0.8))
        if views.intensity_shift > 0:
            t.append(RandShiftIntensityd(KEY, offsets=views.intensity_shift, prob=0.8))
        if views.noise_std > 0:
            t.append(RandGaussianNoised(KEY, std=views.noise_std, prob=0.5))
        if views.blur_prob > 0:
            lo, hi = views.blur_sigma
            t.append(
                RandGaussianSmoothd(KEY, sigma_x=(lo, hi), sigma_y=(lo, hi), sigma_z=(lo, hi), prob=views.blur_prob)
            )
        super().__init__(Compose(t, log_stats=False), final)

    def __call__(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "view1": self._finish(self.augment({KEY: img.clone()})[KEY]),
            "view2": self._finish(self.augment({KEY: img.clone()})[KEY]),
        }


def _frac(size: Sequence[int], f: float) -> list[int]:
    return [max(1, int(round(s * f))) for s in size]


class RestorationViews(_Views):
    """A corrupted crop and the crop to restore: ``{"image": corrupted, "target": original}``.

    Args:
        views: the view settings (crop and flips are used).
        genesis: probabilities of each corruption.
        size: spatial size of each crop.
        final: the pipeline's channel adaptation and normalisation.
    """

    def __init__(
        self,
        views: ViewsConfig,
        genesis: GenesisConfig,
        size: Sequence[int],
        final: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        t = crop_transforms(views, size)
        t.append(CopyItemsd(KEY, names=[TARGET]))
        if genesis.shuffle_prob > 0:
            # blocks of up to a tenth of each side, together covering about half of the crop (Models Genesis:
            # many small blocks whose voxels are permuted, so texture is lost but the shape stays)
            small, big = _frac(size, 0.03), _frac(size, 0.1)
            holes = int(max(1, 0.5 * np.prod(size) / np.prod([(a + b) / 2 for a, b in zip(small, big, strict=True)])))
            holes = min(holes, 400)  # a Python loop per hole: keep a view cheap
            t.append(
                RandCoarseShuffled(
                    KEY,
                    holes=holes,
                    max_holes=holes,
                    spatial_size=small,
                    max_spatial_size=big,
                    prob=genesis.shuffle_prob,
                )
            )
        if genesis.nonlinear_prob > 0:
            t.append(RandHistogramShiftd(KEY, num_control_points=(4, 8), prob=genesis.nonlinear_prob))
        if genesis.paint_prob > 0:
            inpaint = RandCoarseDropoutd(
                KEY,
                holes=1,
                max_holes=5,
                spatial_size=_frac(size, 1 / 6),
                max_spatial_size=_frac(size, 1 / 3),
                dropout_holes=True,
                fill_value=None,  # noise between the image's minimum and maximum
                prob=genesis.paint_prob,
            )
            outpaint = RandCoarseDropoutd(
                KEY,
                holes=1,
                max_holes=3,
                spatial_size=_frac(size, 3 / 7),
                max_spatial_size=_frac(size, 4 / 7),
                dropout_holes=False,  # keep the boxes, fill everything else with noise
                fill_value=None,
                prob=genesis.paint_prob,
            )
            rate = genesis.inpaint_rate
            t.append(OneOf([inpaint, outpaint], weights=[max(rate, 1e-6), max(1.0 - rate, 1e-6)]))
        super().__init__(Compose(t, log_stats=False), final)

    def __call__(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.augment({KEY: img.clone()})
        return {"image": self._finish(d[KEY]), "target": self._finish(d[TARGET])}
