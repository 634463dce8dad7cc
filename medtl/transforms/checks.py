"""Transforms every pipeline shares: error guards naming the scan, channel adaptation, and the check that a scan is
the kind of input a model was built for (dimensions, channels, modality)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    MapTransform,
    Randomizable,
    RandomizableTransform,
    Transform,
)

from medtl.errors import (
    ConfigError,
    DataLoadError,
    MedtlError,
    unwrap_load_error,
)

__all__ = [
    "KEY",
    "XR_MODALITIES",
    "Guard",
    "RandGuard",
    "unwrap_load_error",
    "AdaptChannels",
    "AdaptChannelsd",
    "ModelInput",
    "ModelInputd",
    "RandFlipTensord",
    "ExpectScan",
    "ExpectScand",
    "modality_class",
    "modality_from_meta",
    "default_size",
]

KEY = "image"
XR_MODALITIES = {"CR", "DX", "DR", "MG", "XA", "RF", "RG", "PX", "IO", "XR", "OT", "SC"}


def modality_from_meta(meta: Mapping[str, Any], spatial_dims: int) -> str:
    """Map a scan's DICOM Modality to CT, MR or XR (a 2D image without one: XR).

    Raises:
        ConfigError: the metadata does not tell.
    """
    found = modality_class(meta)
    if found is not None:
        return found
    m = str(meta.get("modality") or "").upper()
    if not m and spatial_dims == 2:
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
            what = msg if isinstance(root, MedtlError) else f"{type(root).__name__}: {msg}"  # medtl's own: as is
            raise DataLoadError(
                f"scan {path}{where} failed in {self.stage}: {what}",
                path=None if path is None else str(path),
                # a scan given to predict (a file, or one found in a folder) has no manifest row
                fix="fix or remove this row of the manifest" if where else "fix the scan or leave it out of the inputs",
            ) from exc


class RandGuard(Guard, Randomizable):
    """A :class:`Guard` around random transforms.

    It is ``Randomizable`` so that MONAI's seeding (``Compose.set_random_state``, ``DataLoader``) reaches the
    transforms inside: a plain ``Transform`` is skipped, which would leave augmentation unseeded and runs
    irreproducible. (Deterministic stages keep the plain Guard, so ``PersistentDataset`` still caches them.)
    """

    def randomize(self, data: Any = None) -> None:
        """The wrapped transforms draw their own parameters."""


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


class ModelInput(Transform):
    """The last step of a sample: a plain float32 tensor with the model's channels and the weights' mean/std.

    MetaTensor metadata is dropped first: training and inference need only the values, and every torch
    operation on a MetaTensor pays for copying its metadata (on 64x64 slices that was most of the time of the
    per-sample transforms, benchmarks/README.md). The arithmetic is MONAI ``NormalizeIntensity``'s with
    ``subtrahend``/``divisor`` channel-wise, ``(x[c] - mean[c]) / std[c]``, so the values are the same bits.

    Args:
        channels: the channel count of the model input (see :class:`AdaptChannels`).
        mean, std: per-channel statistics (one value per model channel), or None for no normalisation.
    """

    def __init__(self, channels: int, mean: list[float] | None = None, std: list[float] | None = None) -> None:
        if (
            (mean is None) != (std is None)
            or (mean is not None and len(mean) != channels)
            or (std is not None and len(std) != channels)
        ):
            raise ConfigError(
                f"normalisation statistics must give one mean and one std per model channel ({channels}); got "
                f"mean {mean} and std {std}"
            )
        self.adapt = AdaptChannels(channels)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def __call__(self, img: Any) -> torch.Tensor:
        x = img.as_subclass(torch.Tensor) if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        x = self.adapt(x.to(torch.float32))
        if self.mean is None or self.std is None:
            return x
        return torch.stack([(x[c] - m) / s for c, (m, s) in enumerate(zip(self.mean, self.std, strict=True))])


class ModelInputd(MapTransform):
    """Dict twin of :class:`ModelInput`."""

    def __init__(
        self, keys: Any, channels: int, mean: list[float] | None = None, std: list[float] | None = None
    ) -> None:
        super().__init__(keys)
        self.op = ModelInput(channels, mean, std)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.op(d[k])
        return d


class RandFlipTensord(RandomizableTransform, MapTransform):
    """Flip ``spatial_axis`` with probability ``prob``: MONAI ``RandFlipd`` for samples that need no metadata.

    It draws from its generator exactly as ``RandFlipd`` does (one ``rand() < prob`` per call), so a seeded
    pipeline flips the same samples, but it flips plain tensors with ``torch.flip`` and keeps them plain:
    ``RandFlipd`` turns every sample into a MetaTensor and records the transform for inversion, even when it does
    not flip, which cost 2.8 ms per 64x64 sample, more than the rest of the per-sample work (benchmarks/README.md).
    Classification samples are never inverted, so nothing is lost; segmentation keeps ``RandFlipd``.

    Args:
        keys: keys of the channel-first images to flip together.
        prob: probability of flipping.
        spatial_axis: spatial axis (0 = the first after the channel).
    """

    def __init__(self, keys: Any, prob: float, spatial_axis: int) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.spatial_axis = spatial_axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            for k in self.key_iterator(d):
                img = d[k] if isinstance(d[k], torch.Tensor) else torch.as_tensor(np.asarray(d[k]))
                d[k] = torch.flip(img, dims=(self.spatial_axis + 1,))
        return d


def modality_class(meta: Mapping[str, Any]) -> str | None:
    """CT, MR or XR from a scan's metadata; None when it does not say."""
    m = str(meta.get("modality") or "").upper()
    if m == "CT" or meta.get("units") == "HU":
        return "CT"
    if m in ("MR", "MRI"):
        return "MR"
    if m in XR_MODALITIES:
        return "XR"
    return None


class ExpectScan(Transform):
    """Check that a scan is the kind of input the pipeline was built for; squeeze a one-slice volume to 2D.

    A model must not silently predict on another kind of input (a 3D CT model on a radiograph, a 4D NIfTI
    averaged into one channel, a one-slice volume stretched into 3D).

    Args:
        dims: spatial dims expected (2 also accepts a volume of one slice when ``flat``).
        channels: channels expected as read (RGB and grey 2D images are interchangeable).
        flat: the images are one-slice volumes used as 2D images.
        modality: CT, MR or XR; a scan whose metadata names another modality is refused.
    """

    def __init__(self, *, dims: int, channels: int, flat: bool = False, modality: str | None = None) -> None:
        self.dims = dims
        self.channels = channels
        self.flat = flat
        self.modality = modality

    def __call__(self, img: Any) -> Any:
        meta = getattr(img, "meta", {}) or {}
        path = meta.get("filename_or_obj", "the scan")
        if img.ndim == 4 and int(img.shape[-1]) == 1 and self.dims == 2:
            img = img[..., 0]
        if img.ndim - 1 != self.dims:
            what = "a volume" if img.ndim == 4 else "a 2D image"
            raise DataLoadError(
                f"{path} is {what} (shape {tuple(img.shape[1:])}) but this model takes {self.dims}D input",
                path=str(path),
                fix="give it scans of the kind it was trained on",
            )
        c = int(img.shape[0])
        if c != self.channels and not (self.dims == 2 and {c, self.channels} <= {1, 3}):
            raise DataLoadError(
                f"{path} has {c} channels but this model was built for {self.channels}",
                path=str(path),
                fix="give it scans of the kind it was trained on (a 4D NIfTI: extract the volume to use)",
            )
        found = modality_class(meta)
        if self.modality and found and found != self.modality:
            raise DataLoadError(
                f"{path} is {found} but this model was trained on {self.modality}",
                path=str(path),
                fix="give it scans of the modality it was trained on, or set data.modality",
            )
        return img


class ExpectScand(MapTransform):
    """Dict twin of :class:`ExpectScan`."""

    def __init__(self, keys: Any, **kwargs: Any) -> None:
        super().__init__(keys)
        self.op = ExpectScan(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.op(d[k])
        return d
