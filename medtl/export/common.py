"""What every export format shares: the exported network, the preprocessed sample it is checked on, the comparison
with PyTorch, and ``input.json`` (the input record, the task, the outputs and the preprocessing, read from the run's
``preprocessing.json`` through :func:`medtl.train.predict.load_run`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl.errors import MedtlError

__all__ = [
    "ExportError",
    "ExportedNetwork",
    "ZeroPadShortcut",
    "traceable",
    "Sample",
    "TOLERANCE",
    "INPUT_NAME",
    "max_abs_diff",
    "check_batches",
    "score_meaning",
    "inference_transforms",
    "preprocess_sample",
    "check_transforms",
]

#: the largest difference allowed between an exported model and PyTorch on the same float32 input
TOLERANCE = 1e-4
INPUT_NAME = "image"


class ExportError(MedtlError, RuntimeError):
    """An export that cannot be written, or whose check against PyTorch failed."""


class ZeroPadShortcut(nn.Module):
    """MONAI ResNet's shortcut type ``A`` (MedicalNet's ResNet-10/18/34: a strided subsampling, then zero channels up
    to ``planes``) as a module tracing follows.

    MONAI writes it as ``torch.cat([out.data, zeros(out.size(0), ...)])``: ``.data`` leaves the traced graph and the
    zeros take the traced batch size, so a traced network would return the traced sample's shortcut for every input
    (and fail on another batch size). This computes the same values (an average pool of kernel 1 and stride ``s`` is
    the subsampling ``x[..., ::s]``) with operations a trace records.
    """

    def __init__(self, planes: int, stride: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.planes, self.stride, self.spatial_dims = int(planes), int(stride), int(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * self.spatial_dims]
        return nn.functional.pad(out, [0, 0] * self.spatial_dims + [0, self.planes - int(x.shape[1])])


def traceable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose steps a trace cannot record faithfully are replaced by equivalent modules
    (:class:`ZeroPadShortcut`); ``model`` itself is left as it is."""
    import copy
    import functools

    copied = copy.deepcopy(model)
    for module in copied.modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, functools.partial) and getattr(shortcut.func, "__name__", "") == (
            "_downsample_basic_block"
        ):
            module.downsample = ZeroPadShortcut(**shortcut.keywords)
    return copied


class ExportedNetwork(nn.Module):
    """The run's network and what ``predict`` does to its outputs, as one module to trace.

    Scan-level tasks (classification, multi-label, regression) end with the task's ``outputs_to_scores`` (softmax
    probabilities, sigmoids, unscaled values): the exported model returns what ``medtl predict`` writes. A dense
    network (one output per voxel: segmentation) returns its logits for one window: whole scans are segmented by a
    sliding window over these logits and an argmax, as ``medtl predict`` does (the MONAI bundle holds that step).

    Args:
        model: the run's network in eval mode.
        scores: the task's ``outputs_to_scores``, or None to return the logits.
    """

    def __init__(self, model: nn.Module, scores: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        super().__init__()
        self.model = model
        self.scores = scores

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.model(image)
        return out if self.scores is None else self.scores(out)


@dataclass
class Sample:
    """The preprocessed input an export is checked on.

    Attributes:
        tensor: ``(1, C, *size)``, float32, what the network takes (a dense network's window of the first scan).
        scan: the scan it was read from (None: random values, no scan of the run was found).
        series: the series of that scan, if the run's records named one.
        scans: every scan the preprocessing is checked on, ``(path, series)``, the first being ``scan``.
        preprocessed: each of them through the run's own preprocessing (``(C, *spatial)``; dense networks: the whole
            scan).
    """

    tensor: torch.Tensor
    scan: str | None
    series: str | None = None
    scans: list[tuple[str, str | None]] = field(default_factory=list)
    preprocessed: list[torch.Tensor] = field(default_factory=list)

    @property
    def described(self) -> str:
        """What the check ran on, without the scan's path (a path may name a patient)."""
        if self.scan is None:
            return "seeded random values of the input's shape (no scan of the run was found; pass a sample scan)"
        return "a scan preprocessed by the run's own pipeline"


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two arrays of one shape (inf when the shapes differ or a value is
    not finite)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return math.inf
    if x.size == 0:
        return 0.0
    d = np.abs(x - y)
    return float(d.max()) if np.isfinite(d).all() else math.inf


def check_batches(sample: torch.Tensor) -> list[torch.Tensor]:
    """The inputs a check compares: the sample alone, another input alone (a trace that kept a value of the
    sample as a constant differs there), and both as a batch of two (the dynamic batch axis)."""
    other = sample.flip(-1) * 0.5 + 0.25
    return [sample, other, torch.cat([sample, other])]


def compare(
    reference: Callable[[torch.Tensor], torch.Tensor],
    exported: Callable[[torch.Tensor], Any],
    sample: torch.Tensor,
    *,
    what: str,
    fix: str,
) -> float:
    """The largest difference between ``reference`` (PyTorch) and ``exported`` over :func:`check_batches`.

    Raises:
        ExportError: the difference is above :data:`TOLERANCE`, or the exported model fails on an input (another
            batch size).
    """
    worst = 0.0
    with torch.no_grad():
        for batch in check_batches(sample):
            want = reference(batch).numpy()
            try:
                got = exported(batch)
            except Exception as exc:  # noqa: BLE001 - a runtime's own error, told in one line
                first = " ".join(str(exc).split())[:200]
                raise ExportError(
                    f"{what} fails on an input of batch size {batch.shape[0]} ({type(exc).__name__}: {first}); "
                    "nothing was written",
                    fix=fix,
                ) from None
            worst = max(worst, max_abs_diff(want, got))
            refuse_above(worst, what, fix)
    return worst


def refuse_above(diff: float, what: str, fix: str) -> None:
    """Refuse an export whose check differs by more than :data:`TOLERANCE`.

    Raises:
        ExportError: naming the difference.
    """
    if not diff <= TOLERANCE:
        raise ExportError(
            f"{what} differs from PyTorch by {diff:.3g} (max abs, float32; allowed {TOLERANCE:g}); nothing was written",
            fix=fix,
        )


def score_meaning(scores: Callable[[torch.Tensor], torch.Tensor] | None, n_outputs: int) -> str:
    """What the exported outputs mean, found by applying the task's ``outputs_to_scores`` to known values (never by
    asking which task it is)."""
    if scores is None:
        return (
            "logits per voxel of one window (axis 1: the classes); softmax over axis 1 gives class probabilities, "
            "argmax the label map; whole scans: a sliding window of this size over the scan, logits blended, then "
            "argmax (the MONAI bundle export does it)"
        )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, max(n_outputs, 1), generator=g) * 3
    with torch.no_grad():
        y = scores(x).float()
    if y.shape == x.shape and torch.allclose(y, x.softmax(-1), atol=1e-6):
        return "softmax probabilities, one per class (they sum to 1)"
    if y.shape == x.shape and torch.allclose(y, x.sigmoid(), atol=1e-6):
        return "sigmoid probabilities, one per output (independent of each other)"
    if y.shape == x.shape and torch.allclose(y, x, atol=1e-6):
        return "the network's values, one per output (no activation)"
    return "values, one per output: the network's outputs mapped by the task (its target scaling undone)"


def inference_transforms(loaded: Any, dense: bool) -> list[Any]:
    """The leaf transforms ``medtl predict`` applies to a scan before the network (see
    :func:`medtl.export.transforms.flatten_transforms`): the run's pipeline (``pre`` then ``post_eval``) for a
    scan-level network; for a dense one, the whole-scan preprocessing of segmentation inference, whose steps MONAI
    ``Invertd`` can undo."""
    from medtl.export.transforms import flatten_transforms

    if dense:
        from medtl.transforms.segmentation import build_inference_transforms

        return flatten_transforms(build_inference_transforms(loaded.config, loaded.record))
    return flatten_transforms(loaded.pipeline.pre) + flatten_transforms(loaded.pipeline.post_eval)


#: how many of the run's scans the bundle's preprocessing is checked on
CHECK_SCANS = 8


def _candidate_scans(loaded: Any, limit: int) -> list[tuple[str, str | None]]:
    """Up to ``limit`` scans of the run that still exist: its test, then validation predictions (image, series)."""
    found: list[tuple[str, str | None]] = []
    for split in ("test", "val"):
        try:
            rows = loaded.run.read_prediction_rows(split)
        except (MedtlError, OSError, ValueError):
            continue
        for r in rows:
            image = str(r.get("image") or "")
            if image and Path(image).exists() and len(found) < limit:
                found.append((image, r.get("series") or None))
    return found


def _preprocessed(loaded: Any, dense: bool, scan: str, series: str | None) -> torch.Tensor:
    """One scan through the run's own preprocessing, as ``medtl predict`` applies it: ``(C, *spatial)`` float32 (a
    dense network's whole scan; a scan-level network's input)."""
    from monai.transforms import Compose

    item = {"image": str(scan), "series": series or "", "label": 0, "patient_id": "", "row": None}
    try:
        if dense:
            out = Compose(inference_transforms(loaded, True), log_stats=False)(item)["image"]
        else:
            got = loaded.task.eval_dataset(loaded.config, loaded.pipeline, [item])[0]
            out = (got[0] if isinstance(got, list) else got)["image"]
    except MedtlError as exc:
        raise ExportError(
            f"sample scan {scan}: {exc}", path=str(scan), fix="give a scan of the kind the run was trained on"
        ) from None
    return torch.as_tensor(out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out).float()


def preprocess_sample(loaded: Any, dense: bool, scan: str | Path | None = None) -> Sample:
    """The input an export is checked on: ``scan`` (default: the run's test, then validation scans that still exist,
    up to :data:`CHECK_SCANS`) through the run's own preprocessing; seeded random values of the input's shape when
    no scan is given or found.

    Raises:
        ExportError: ``scan`` does not exist, or cannot be read as the run's input.
    """
    record = loaded.record
    shape = (1, record.in_channels, *(record.size or ()))
    if scan is not None and not Path(scan).exists():
        raise ExportError(f"sample scan {scan} does not exist", path=str(scan), fix="give an existing scan file")
    scans = [(str(scan), None)] if scan is not None else _candidate_scans(loaded, CHECK_SCANS)
    if not scans:
        g = torch.Generator().manual_seed(0)
        return Sample(torch.rand(shape, generator=g), None)
    full = [_preprocessed(loaded, dense, path, series) for path, series in scans]
    first = _window(full[0], list(record.size or full[0].shape[1:])) if dense else full[0]
    return Sample(first[None].contiguous(), scans[0][0], scans[0][1], scans=scans, preprocessed=full)


def _window(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The central window of ``size`` of a preprocessed scan ``(C, *spatial)`` (zero-padded where it is smaller)."""
    from monai.transforms import ResizeWithPadOrCrop

    out = ResizeWithPadOrCrop(spatial_size=list(size))(image)
    return torch.as_tensor(out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out).float()


def check_transforms(transforms: list[dict[str, Any]], sample: Sample) -> float | None:
    """The largest difference between the MONAI transforms ``transforms`` (bundle config, parsed by MONAI's
    ``ConfigParser``) and the run's own preprocessing, over the sample's scans; None without scans.

    Raises:
        ExportError: MONAI cannot read a scan, or gives another shape than the run's preprocessing.
    """
    import warnings

    from monai.bundle import ConfigParser

    if not sample.scans:
        return None
    parser = ConfigParser({"imports": ["$import torch"], "pre": {"_target_": "Compose", "transforms": transforms}})
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns that parsing a config runs code: this one was written here
        pre = parser.get_parsed_content("pre")
        for (scan, _), ours in zip(sample.scans, sample.preprocessed, strict=True):
            try:
                out = pre({"image": scan})["image"]
            except Exception as exc:  # noqa: BLE001 - whatever MONAI raises, one line naming the cause
                first = " ".join(str(exc).split())[:300]
                raise ExportError(
                    f"MONAI's transforms alone cannot read the run's scan {scan}: {type(exc).__name__}: {first}",
                    fix="give the bundle scans MONAI's LoadImaged reads (one DICOM series per folder, a DICOM file, a "
                    "NIfTI file), or export to onnx or torchscript",
                ) from None
            theirs = torch.as_tensor(out.as_tensor() if hasattr(out, "as_tensor") else out).float()
            if tuple(theirs.shape) != tuple(ours.shape):
                raise ExportError(
                    f"MONAI's transforms give shape {tuple(theirs.shape)} for the run's scan {scan}, the run's own "
                    f"preprocessing {tuple(ours.shape)}; nothing was written",
                    fix="export to onnx or torchscript and apply the preprocessing described in input.json yourself",
                )
            worst = max(worst, max_abs_diff(theirs.numpy(), ours.numpy()))
    return worst
