"""Overlay PNGs: a scan slice with its predicted mask filled in colour and the reference mask outlined.

:func:`render_overlay` draws one picture from arrays; :func:`write_overlays` draws a few scans of a dataset with a
model and writes them into a run folder's ``overlays/`` (what :meth:`SegmentationTask.write_extras
<medtl.tasks.segmentation.SegmentationTask.write_extras>` calls after the test predictions).

What is drawn:

* the slice: for a volume, the axial slice (last axis) with the most reference foreground (any class but the
  background); without reference foreground, the one with the most predicted foreground; the middle slice when
  both are empty. The reference decides first so that the picture does not depend on what the model got wrong
  (an untrained model that calls everything foreground would otherwise pick the first slice). A 2D image is
  drawn as it is;
* its orientation: 2D images are ``(row, column)`` as displayed (the pipeline's layout); volumes in RAS (the
  default ``preprocess.orientation``) are shown in the radiological view (anterior up, the patient's right on the
  left); each pixel is drawn with its physical aspect (voxel spacing);
* grey levels: the preprocessed intensities. A CT window (or a fixed range) has already mapped the scan to
  ``[0, 1]``: that is shown as it is, black to white, so the picture uses the run's own window. Other intensities
  (percentile scaling that left values outside ``[0, 1]``, z-scores) are shown between their 1st and 99th
  percentiles on the slice;
* each foreground class in its colour (matplotlib's ``tab10``, class 1 first): the prediction filled, semi-opaque;
  the reference as a solid outline of the same colour; a legend names the classes.

Rendering uses matplotlib's Agg backend (no display needed) on a private figure, so it is safe in worker
processes and leaves pyplot's state alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Overlay", "choose_slice", "display_range", "render_overlay", "write_overlays", "overlay_name"]

#: The longest side of an overlay PNG, in pixels.
DEFAULT_SIZE = 512
_FILL_ALPHA = 0.45


@dataclass(frozen=True)
class Overlay:
    """One rendered overlay.

    Attributes:
        png: the PNG file's bytes.
        slice_index: the axial slice drawn (None for a 2D image).
        width, height: the PNG's size in pixels.
        foreground: pixels of the drawn slice that are foreground in the reference or the prediction.
    """

    png: bytes
    slice_index: int | None
    width: int
    height: int
    foreground: int


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def choose_slice(reference: np.ndarray | None, prediction: np.ndarray) -> int:
    """The index on the last axis with the most reference foreground (> 0), else the most predicted foreground.

    Ties go to the lowest index; with no foreground in either, the middle slice.
    """
    for mask in (reference, prediction):
        if mask is None:
            continue
        fg = np.asarray(mask) > 0
        counts = fg.reshape(-1, fg.shape[-1]).sum(axis=0)
        if counts.max(initial=0) > 0:
            return int(np.argmax(counts))
    return int(np.asarray(prediction).shape[-1] // 2)


def display_range(image: np.ndarray) -> tuple[float, float]:
    """Grey-level limits: ``(0, 1)`` for intensities already windowed into ``[0, 1]``, else the 1st-99th
    percentiles (a constant image: its value and value + 1)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    p1, p99 = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    return (p1, p99) if p99 > p1 else (lo, lo + 1.0)


def _pixel_size(shape: tuple[int, int], aspect: float, size: int) -> tuple[int, int]:
    """(width, height) in pixels of a (rows, cols) picture whose pixels are ``aspect`` times taller than wide."""
    rows, cols = shape
    w, h = float(cols), float(rows) * aspect
    scale = size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def render_overlay(
    image: Any,
    prediction: Any,
    reference: Any | None,
    classes: Sequence[str],
    *,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    size: int = DEFAULT_SIZE,
) -> Overlay:
    """Draw one overlay PNG (see the module docstring for what is drawn).

    Args:
        image: the preprocessed scan, ``(C, *spatial)`` or ``(*spatial)``; channel 0 is drawn. 2D: ``(rows,
            columns)`` as displayed; 3D: ``(x, y, z)``, RAS for the radiological view.
        prediction: the predicted label map, same spatial shape (a leading channel of 1 is allowed).
        reference: the reference label map, or None.
        classes: class names in label-value order (index 0: the background, not drawn).
        spacing: voxel size in mm per spatial axis (None: square pixels).
        title: text drawn in the top-left corner (e.g. the scan's name).
        size: the longest side of the PNG, in pixels.

    Returns:
        The :class:`Overlay`.

    Raises:
        ValueError: the masks' spatial shape differs from the image's, or the image is not 2D or 3D.
    """
    # a Figure on its own Agg canvas: no pyplot, so a notebook's backend and figures are left alone
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    img = _as_array(image).astype(np.float64)
    pred = _as_array(prediction)
    ref = None if reference is None else _as_array(reference)
    spatial = pred.shape[1:] if pred.ndim == img.ndim else pred.shape
    if img.ndim == len(spatial) + 1:
        img = img[0]
    if pred.ndim == img.ndim + 1:
        pred = pred[0]
    if ref is not None and ref.ndim == img.ndim + 1:
        ref = ref[0]
    if img.ndim not in (2, 3):
        raise ValueError(f"an overlay needs a 2D or 3D image, but it is {img.ndim}D (shape {img.shape})")
    for name, m in (("prediction", pred), ("reference", ref)):
        if m is not None and m.shape != img.shape:
            raise ValueError(f"the {name} has spatial shape {m.shape}, but the image has {img.shape}")
    sp = [float(s) for s in spacing] if spacing is not None else [1.0] * img.ndim

    if img.ndim == 3:
        k = choose_slice(ref, pred)

        def view(a: np.ndarray) -> np.ndarray:  # (x, y) RAS -> rows anterior first, columns patient-right first
            return np.ascontiguousarray(a[:, :, k][::-1, ::-1].T)

        aspect = sp[1] / sp[0]  # rows step along y, columns along x
    else:
        k = None

        def view(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a)

        aspect = sp[0] / sp[1]
    g, p = view(img), view(pred).astype(np.int64)
    r = None if ref is None else view(ref).astype(np.int64)
    fg = int(((p > 0) | (r > 0)).sum()) if r is not None else int((p > 0).sum())

    width, height = _pixel_size(g.shape, aspect, size)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    vmin, vmax = display_range(g)
    ax.imshow(g, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    colours = matplotlib.colormaps["tab10"]
    handles = []
    for c in range(1, len(classes)):
        colour = to_rgba(colours((c - 1) % 10))
        fill = np.zeros((*p.shape, 4))
        fill[p == c] = (*colour[:3], _FILL_ALPHA)
        if (p == c).any():
            ax.imshow(fill, interpolation="nearest", aspect="auto")
        if r is not None and (r == c).any() and (r != c).any():
            ax.contour((r == c).astype(float), levels=[0.5], colors=[colour], linewidths=1.5)
        handles.append(Patch(facecolor=(*colour[:3], _FILL_ALPHA), edgecolor=colour, label=str(classes[c])))
    ax.set_xlim(-0.5, g.shape[1] - 0.5)
    ax.set_ylim(g.shape[0] - 0.5, -0.5)
    parts = [title, None if k is None else f"slice {k}", "fill: prediction", None if r is None else "line: reference"]
    text = "  ".join(t for t in parts if t)
    ax.text(
        0.01, 0.99, text, transform=ax.transAxes, ha="left", va="top", fontsize=7, color="white",
        bbox={"facecolor": "black", "alpha": 0.5, "pad": 2, "linewidth": 0},
    )  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return Overlay(buf.getvalue(), k, width, height, fg)


def overlay_name(image: str, used: set[str]) -> str:
    """``<scan name>.png`` for a scan path (a NIfTI's name without ``.nii.gz``; a DICOM file's stem or folder's
    name), made unique among ``used`` with ``_1``, ``_2``..."""
    p = Path(image)
    lower = p.name.lower()
    if lower.endswith(".nii.gz"):
        stem = p.name[: -len(".nii.gz")]
    elif lower.endswith(".nii"):
        stem = p.name[: -len(".nii")]
    else:
        stem = p.stem if p.suffix and not p.is_dir() else p.name
    name, i = f"{stem}.png", 1
    while name in used:
        name, i = f"{stem}_{i}.png", i + 1
    used.add(name)
    return name


@torch.no_grad()
def write_overlays(
    out_dir: str | Path,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    dataset: Any,
    records: Sequence[dict[str, Any]],
    classes: Sequence[str],
    *,
    max_scans: int = 3,
    device: torch.device | str = "cpu",
    size: int = DEFAULT_SIZE,
    write: Callable[[Path, bytes], None] | None = None,
) -> dict[Path, Overlay]:
    """Draw the first ``max_scans`` scans of a segmentation dataset and write ``<scan name>.png`` files.

    Args:
        out_dir: the folder (created).
        predictor: logits of a batch of whole scans ``(1, C, *spatial)`` (e.g. a sliding window over the model).
        dataset: a :class:`~medtl.data.dataset.SegmentationDataset` of whole scans (no training patches); its
            cached preprocessing stage (``dataset.base``) gives the intensities drawn, before the weights'
            normalisation.
        records: the dataset's records (for the scan names).
        classes: class names in label-value order.
        max_scans: how many scans to draw.
        device: where the predictor runs.
        size: the longest side of each PNG, in pixels.
        write: how to write a file (default: an atomic write).

    Returns:
        Each PNG file written and what it shows.
    """
    from medtl.utils import atomic_write_bytes

    write = write or atomic_write_bytes
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a full disk or a file in the way: one line naming the folder, as for every run file
        from medtl.errors import MedtlError

        raise MedtlError(
            f"cannot create the overlay folder {out} ({exc.strerror or exc})",
            path=str(out),
            fix="free space or make the run folder writable, then run the command again",
        ) from None
    used: set[str] = set()
    written: dict[Path, Overlay] = {}
    for idx in range(min(max_scans, len(records), len(dataset))):
        sample = dataset[idx]
        if isinstance(sample, list):  # a training dataset's patches: not a whole scan
            raise ValueError("write_overlays needs a dataset of whole scans (train=False)")
        logits = predictor(sample["image"][None].float().to(device))
        pred = logits.argmax(1)[0].cpu()
        shown = sample["image"]
        base = getattr(dataset, "base", None)
        if base is not None:
            shown = base[idx]["image"]  # before the weights' normalisation: the run's own window
        spacing = sample.get("spacing")
        overlay = render_overlay(
            shown,
            pred,
            sample["mask"],
            classes,
            spacing=None if spacing is None else [float(s) for s in spacing],
            title=Path(str(records[idx]["image"])).name,
            size=size,
        )
        path = out / overlay_name(str(records[idx]["image"]), used)
        write(path, overlay.png)
        written[path] = overlay
    return written
