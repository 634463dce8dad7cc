"""The run's own preprocessing as MONAI bundle config: each transform the run applies, as a ``_target_`` dict that
``monai.bundle.ConfigParser`` builds without medtl installed.

The list is translated from the transform objects the run's pipeline holds (built by ``load_run`` from the input
record of ``preprocessing.json``), one step each, never re-derived from the config. medtl's own steps become their
MONAI equivalent:

* ``LoadScand`` (medtl's DICOM and NIfTI reader) -> ``LoadImaged`` (MONAI's ``PydicomReader`` / ``NibabelReader``),
  ``EnsureChannelFirstd``, and a ``Lambdad`` that inverts MONOCHROME1 radiographs as medtl does (MONAI keeps them as
  stored): the same voxels and RAS affine for one series per folder, one DICOM file or one NIfTI file. (MONAI's
  reader stacks every series of a folder into one volume: give the bundle one series per folder.)
* ``ExpectScand`` (a check that refuses the wrong kind of scan) -> nothing, except that a one-slice volume used as a
  2D image is squeezed to 2D as medtl does.
* ``AdaptChannelsd`` / ``ModelInputd`` (channel count, ImageNet-style statistics) -> a ``Lambdad`` that repeats a
  grey image or averages channels exactly as medtl does, then ``NormalizeIntensityd`` with the per-channel mean and
  std (the same arithmetic, so the same values).

Every other step is MONAI's already (orientation, spacing, intensity, resize, pad) and keeps its arguments. A step
this module does not know is an :class:`~medtl.export.common.ExportError` naming it: an export that silently dropped a
step would not reproduce the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medtl.export.common import ExportError

__all__ = ["bundle_transforms", "flatten_transforms"]

KEY = "image"
#: readers of LoadImaged, in MONAI's order (the last registered is tried first): DICOM first, NIfTI otherwise. The
#: DICOM reader keeps every header field, for the MONOCHROME1 step below.
READERS = [{"_target_": "NibabelReader"}, {"_target_": "PydicomReader", "prune_metadata": False}]


def _tag(tag: str, default: str) -> str:
    """A bundle expression: the first value of DICOM ``tag`` in the image's metadata (``default`` without it)."""
    return f"(x.meta.get('{tag}') or {{}}).get('Value', [{default}])[0]"


#: medtl reads a MONOCHROME1 image inverted, so that high values are bright (``medtl.io.dicom.pixels``): stored
#: ``s`` becomes ``(lo + hi - s) * slope + intercept``, the stored range's ends ``lo``, ``hi``. MONAI's reader gives
#: ``v = s * slope + intercept``; the same values are then ``(lo + hi) * slope + 2 * intercept - v``.
_MONOCHROME1 = (
    f"$lambda x: x if {_tag('00280004', repr(''))} != 'MONOCHROME1' else "
    f"(-1.0 if int({_tag('00280103', '0')}) == 1 else 2.0 ** int({_tag('00280101', '16')}) - 1.0) "
    f"* float({_tag('00281053', '1')}) + 2.0 * float({_tag('00281052', '0')}) - x"
)
#: medtl's channel adaptation (:class:`medtl.transforms.checks.AdaptChannels`) as a bundle expression
_ADAPT = (
    "$lambda x: x if x.shape[0] == {n} else (x.repeat({n}, *[1] * (x.ndim - 1)) if x.shape[0] == 1 "
    "else x.mean(0, keepdim=True))"
)
_SQUEEZE_FLAT = "$lambda x: x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x"


def flatten_transforms(transform: Any) -> list[Any]:
    """The leaf transforms of ``transform``, in order (MONAI ``Compose`` and medtl's ``Guard`` opened)."""
    from monai.transforms import Compose

    from medtl.transforms.checks import Guard

    if isinstance(transform, Compose):
        return [leaf for t in transform.transforms for leaf in flatten_transforms(t)]
    if isinstance(transform, Guard):
        return flatten_transforms(transform.transform)
    return [transform]


def _first(value: Any) -> Any:
    """The value of a dict transform's per-key option tuple (one key here)."""
    return value[0] if isinstance(value, tuple | list) and value else value


def _plain(value: Any) -> Any:
    """JSON-ready: numpy arrays and scalars, tuples and enums as lists, numbers and strings."""
    import enum

    import numpy as np

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _load(t: Any) -> list[dict[str, Any]]:
    return [
        {"_target_": "LoadImaged", "keys": KEY, "reader": [dict(r) for r in READERS], "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": KEY},
        {"_target_": "Lambdad", "keys": KEY, "func": _MONOCHROME1},
    ]


def _expect(t: Any) -> list[dict[str, Any]]:
    if t.op.dims == 2:
        return [{"_target_": "Lambdad", "keys": KEY, "func": _SQUEEZE_FLAT}]
    return []


def _orientation(t: Any) -> list[dict[str, Any]]:
    o = t.ornt_transform
    out = {"_target_": "Orientationd", "keys": KEY, "axcodes": o.axcodes}
    if o.labels is not None:
        out["labels"] = _plain(o.labels)
    return [out]


def _spacing(t: Any) -> list[dict[str, Any]]:
    s = t.spacing_transform
    return [
        {
            "_target_": "Spacingd",
            "keys": KEY,
            "pixdim": _plain(s.pixdim),
            "mode": _plain(_first(t.mode)),
            "padding_mode": _plain(_first(t.padding_mode)),
            "align_corners": _plain(_first(t.align_corners)),
        }
    ]


def _transpose(t: Any) -> list[dict[str, Any]]:
    return [{"_target_": "Transposed", "keys": KEY, "indices": _plain(t.transform.indices)}]


def _scale_range(t: Any) -> list[dict[str, Any]]:
    s = t.scaler
    return [
        {
            "_target_": "ScaleIntensityRanged",
            "keys": KEY,
            "a_min": _plain(s.a_min),
            "a_max": _plain(s.a_max),
            "b_min": _plain(s.b_min),
            "b_max": _plain(s.b_max),
            "clip": bool(s.clip),
        }
    ]


def _percentiles(t: Any) -> list[dict[str, Any]]:
    s = t.scaler
    return [
        {
            "_target_": "ScaleIntensityRangePercentilesd",
            "keys": KEY,
            "lower": _plain(s.lower),
            "upper": _plain(s.upper),
            "b_min": _plain(s.b_min),
            "b_max": _plain(s.b_max),
            "clip": bool(s.clip),
            "relative": bool(s.relative),
            "channel_wise": bool(s.channel_wise),
        }
    ]


def _normalize(t: Any) -> list[dict[str, Any]]:
    n = t.normalizer
    out: dict[str, Any] = {"_target_": "NormalizeIntensityd", "keys": KEY, "nonzero": bool(n.nonzero)}
    out["channel_wise"] = bool(n.channel_wise)
    for key in ("subtrahend", "divisor"):
        value = getattr(n, key)
        if value is not None:
            out[key] = _plain(value)
    return [out]


def _resize(t: Any) -> list[dict[str, Any]]:
    r = t.resizer
    out = {"_target_": "Resized", "keys": KEY, "spatial_size": _plain(r.spatial_size), "size_mode": r.size_mode}
    out["mode"] = _plain(_first(t.mode))
    if _first(t.align_corners) is not None:
        out["align_corners"] = _plain(_first(t.align_corners))
    if _first(t.anti_aliasing):
        out["anti_aliasing"] = True
    return [out]


def _pad_or_crop(t: Any) -> list[dict[str, Any]]:
    pad = t.padder.padder
    return [
        {
            "_target_": "ResizeWithPadOrCropd",
            "keys": KEY,
            "spatial_size": _plain(pad.spatial_size),
            "method": _plain(pad.method),
            "mode": _plain(_first(t.mode)),
        }
    ]


def _pad(t: Any) -> list[dict[str, Any]]:
    pad = t.padder
    return [
        {
            "_target_": "SpatialPadd",
            "keys": KEY,
            "spatial_size": _plain(pad.spatial_size),
            "method": _plain(pad.method),
            "mode": _plain(_first(t.mode)),
        }
    ]


def _ensure_type(t: Any) -> list[dict[str, Any]]:
    return [{"_target_": "EnsureTyped", "keys": KEY, "data_type": "tensor", "dtype": "$torch.float32"}]


def _channels(n: int) -> list[dict[str, Any]]:
    return [{"_target_": "Lambdad", "keys": KEY, "func": _ADAPT.format(n=int(n))}]


def _adapt(t: Any) -> list[dict[str, Any]]:
    return _channels(t.op.channels)


def _model_input(t: Any) -> list[dict[str, Any]]:
    op = t.op
    out = _ensure_type(t) + _channels(op.adapt.channels)
    if op.mean is not None and op.std is not None:
        out.append(
            {
                "_target_": "NormalizeIntensityd",
                "keys": KEY,
                "subtrahend": list(op.mean),
                "divisor": list(op.std),
                "channel_wise": True,
            }
        )
    return out


def _check_only(t: Any) -> list[dict[str, Any]]:
    return []


#: transform class name -> its bundle config
_TRANSLATIONS: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "LoadScand": _load,
    "ExpectScand": _expect,
    "ExpectVolumed": _check_only,
    "Orientationd": _orientation,
    "Spacingd": _spacing,
    "Transposed": _transpose,
    "ScaleIntensityRanged": _scale_range,
    "ScaleIntensityRangePercentilesd": _percentiles,
    "NormalizeIntensityd": _normalize,
    "Resized": _resize,
    "ResizeWithPadOrCropd": _pad_or_crop,
    "SpatialPadd": _pad,
    "EnsureTyped": _ensure_type,
    "AdaptChannelsd": _adapt,
    "ModelInputd": _model_input,
}


def bundle_transforms(transforms: list[Any]) -> list[dict[str, Any]]:
    """The MONAI bundle config of ``transforms`` (leaf transforms of the run's inference preprocessing, in order).

    Args:
        transforms: what :func:`flatten_transforms` gives for the run's preprocessing.

    Raises:
        ExportError: a step has no translation (named), or the keys are not the image's.
    """
    out: list[dict[str, Any]] = []
    for t in transforms:
        name = type(t).__name__
        translate = _TRANSLATIONS.get(name)
        if translate is None:
            raise ExportError(
                f"the run's preprocessing holds {name}, which the export cannot write as a MONAI transform",
                fix="export to onnx or torchscript and apply the preprocessing described in input.json yourself",
            )
        keys = list(getattr(t, "keys", (KEY,)) or (KEY,))
        if keys != [KEY]:
            raise ExportError(
                f"the run's preprocessing step {name} works on keys {keys}, not on the image alone",
                fix="export to onnx or torchscript and apply the preprocessing described in input.json yourself",
            )
        for step in translate(t):
            if not out or step != out[-1]:  # the run's EnsureTyped twice in a row is one step
                out.append(step)
    return out
