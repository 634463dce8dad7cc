"""Saliency maps: where a classifier looks, as a heat map on each scan's own grid (NIfTI) and an overlay PNG.

Methods (MONAI's :mod:`monai.visualize`):

- ``gradcam`` (the default): Grad-CAM (Selvaraju et al. 2017), the deepest stage's activations weighted by the mean
  gradient of the explained output's logit;
- ``gradcampp``: Grad-CAM++ (Chattopadhyay et al. 2018), pixel-wise weights that separate several instances better;
- ``occlusion``: occlusion sensitivity, model-agnostic: how much the explained output's probability drops when a
  patch (an eighth of each side) is replaced by the image's mean, patches overlapping by half.

The layer Grad-CAM reads is the architecture record's :attr:`~medtl.backbones.registry.ArchSpec.cam_layer` (the last
stage), never typed by the user; its :attr:`~medtl.backbones.registry.ArchSpec.cam_map` lays a ViT's tokens out on
the patch grid. Each map is scaled so that its largest value is 1 (a map that is zero everywhere stays zero).

Which output is explained is the task's: :meth:`medtl.tasks.base.Task.saliency` (classification: the predicted class,
or a class named with ``--saliency-class``); tasks without it refuse.

Where the map lies: the scan goes through :func:`native_transforms`, the run's own preprocessing (load, check,
reorient, resample, intensity, resize: the steps of the run's cached ``pre`` stage) with MONAI's metadata kept, and
then the run's own ``post_eval`` (channels, normalisation); the map, at the network's input size, is put back on the
scan's grid by MONAI ``Invertd`` (resizing, padding, resampling, reorientation and the 2D transpose undone, linear
interpolation), as segmentation's native-grid inference puts masks back (:mod:`medtl.train.seg_inference`). The
NIfTI map therefore has the scan's own shape and affine.

The PNG: the scan as read (grey levels between its 1st and 99th percentiles) with the map in colour over it. A 2D
image is drawn as displayed; a volume is reoriented to RAS for the drawing only and its axial slice with the most
saliency (the middle one when the map is flat) is drawn in the radiological view (anterior up, the patient's right
on the left), as :mod:`medtl.train.overlay` draws segmentation overlays.

2.5D runs (a 2D network over the slices of volumes) are refused: their network sees one slice (or three neighbours)
at a time and averages the slices' scores, so there is no one map of the scan to explain; train in 3D, or export the
slices as 2D images, to see where such a model looks.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.errors import MedtlError, TrainingError
from medtl.utils import look_up_option

__all__ = [
    "SALIENCY_METHODS",
    "METHOD_WORDS",
    "SaliencyExplainer",
    "native_transforms",
    "render_saliency",
    "saliency_name",
    "write_saliency",
]

#: The saliency methods ``predict --saliency`` takes (the first is the default).
SALIENCY_METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "occlusion")
#: How the PNGs and messages name each method.
METHOD_WORDS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "occlusion": "occlusion"}
#: Occlusion: the patch side as a share of each side of the network input, and the patches' overlap.
OCCLUSION_FRACTION = 1 / 8
OCCLUSION_OVERLAP = 0.5
#: The longest side of a saliency PNG, in pixels.
PNG_SIZE = 512
_ALPHA = 0.45
_KEY = "image"


# ------------------------------------------------------------------------------------------------ transforms


def native_transforms(config: Any, record: Any) -> Any:
    """The image-only preprocessing of a classification (or any one-row-per-scan) run with MONAI's metadata kept, so
    that ``Invertd`` can put a map made at the network's input size back on the scan's own grid.

    It is the run's cached ``pre`` stage (:func:`medtl.transforms.presets.build_pipeline`): load, check, reorient,
    resample, intensity, resize or pad/crop; the network input is then the run's own ``post_eval`` applied to its
    output (the tests check that the two give the same tensor).

    Args:
        config: the run's :class:`~medtl.config.ExperimentConfig`.
        record: the run's :class:`~medtl.transforms.record.InputRecord`, with the model's input size.

    Raises:
        TrainingError: a 2.5D run (see the module docstring).
    """
    from monai.transforms import Compose, Orientationd, Resized, ResizeWithPadOrCropd, Spacingd, Transposed

    from medtl.io import LoadScand
    from medtl.transforms.checks import ExpectScand
    from medtl.transforms.presets import _intensity

    if record.mode == "2.5d":
        raise TrainingError(
            "saliency maps are made for 2D and 3D runs; this run is 2.5D (a 2D network over the slices of volumes, "
            "whose scores are averaged), so no one map explains a scan",
            fix="train the model in 3D (data.mode: 3d), or give the slices as 2D images",
        )
    size = list(record.size or ())
    t: list[Any] = [
        LoadScand(keys=[_KEY], series_key="series"),
        ExpectScand(
            _KEY,
            dims=record.scan_dims,
            channels=record.scan_channels,
            flat=record.flat_volumes,
            modality=record.modality,
        ),
    ]
    if record.scan_dims == 3:
        if config.preprocess.orientation:
            t.append(
                Orientationd(_KEY, axcodes=config.preprocess.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
            )
        if config.preprocess.spacing:
            pixdim = list(config.preprocess.spacing)
            t.append(Spacingd(_KEY, pixdim=pixdim * 3 if len(pixdim) == 1 else pixdim, mode="bilinear"))
    else:
        t.append(Transposed(_KEY, indices=(0, 2, 1)))  # (C, columns, rows) -> as displayed, as the run's pipeline
    t += _intensity(record.modality, record.normalization, config)[0]
    if config.preprocess.resize == "resize":
        t.append(Resized(_KEY, spatial_size=size, mode="area"))
    else:
        t.append(ResizeWithPadOrCropd(_KEY, spatial_size=size))
    return Compose(t, log_stats=False)


# ------------------------------------------------------------------------------------------------ the maps


def _logit(logits: torch.Tensor, index: int) -> torch.Tensor:
    """The explained output's raw logit (the default score of a map)."""
    return logits[:, index]


def _hooks_class() -> type:
    from monai.visualize.class_activation_maps import ModelWithHooks

    class _MapHooks(ModelWithHooks):
        """MONAI's hooks, with the target layer's output and gradient laid out as ``(B, C, *spatial)`` maps by the
        record's :attr:`~medtl.backbones.registry.ArchSpec.cam_map` (a ViT's tokens)."""

        def __init__(self, model: nn.Module, layer: str, to_map: Callable | None) -> None:
            self.to_map = to_map
            self.size: tuple[int, ...] = ()
            self.score_of: Callable[[torch.Tensor, int], torch.Tensor] = _logit
            super().__init__(model, layer, register_forward=True, register_backward=True)

        def class_score(self, logits: torch.Tensor, class_idx: int) -> torch.Tensor:
            return self.score_of(logits.float(), int(class_idx)).squeeze()

        def _as_map(self, x: torch.Tensor) -> torch.Tensor:
            return x if self.to_map is None else self.to_map(x, self.size)

        def forward_hook(self, name: str) -> Callable:
            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
                self.activations[name] = self._as_map(output)

            return hook

        def backward_hook(self, name: str) -> Callable:
            def hook(_module: nn.Module, _grad_in: Any, grad_out: tuple[torch.Tensor, ...]) -> None:
                self.gradients[name] = self._as_map(grad_out[0])

            return hook

        def __call__(self, x: torch.Tensor, class_idx: Any = None, retain_graph: bool = False, **kwargs: Any) -> Any:
            self.size = tuple(int(s) for s in x.shape[2:])
            return super().__call__(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)

    return _MapHooks


class SaliencyExplainer:
    """Saliency maps of one network (a :class:`~medtl.models.MedtlModel`) with one method.

    The network is copied (MONAI's hooks stay on the copy), in eval mode, on ``device``.

    Args:
        model: the trained network.
        method: one of :data:`SALIENCY_METHODS`.
        scores: the task's outputs -> scores (:meth:`~medtl.tasks.base.Task.outputs_to_scores`), for occlusion.
        device: where the maps are computed.

    Raises:
        UnknownOptionError: an unknown method (with the closest one).
        TrainingError: the network is not a medtl model (no architecture record to take the layer from).
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "gradcam",
        *,
        scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.method = look_up_option(method, SALIENCY_METHODS, what="saliency method")
        spec = getattr(model, "spec", None)
        if spec is None or not hasattr(spec, "cam_layer"):
            raise TrainingError(f"saliency maps need a medtl model with an architecture record, not {type(model)}")
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.layer = "net." + spec.cam_layer
        self.scores = scores or (lambda out: out.float().softmax(-1))
        self._cam: Any = None
        if self.method != "occlusion":
            from monai.visualize import GradCAM, GradCAMpp

            hooks = _hooks_class()(self.model, self.layer, spec.cam_map)
            make = GradCAM if self.method == "gradcam" else GradCAMpp
            self._cam = make(nn_module=hooks, target_layers=self.layer, postprocessing=lambda m: m)

    @property
    def words(self) -> str:
        """The method's name in words (``Grad-CAM``)."""
        return METHOD_WORDS[self.method]

    @torch.no_grad()
    def outputs(self, image: torch.Tensor) -> torch.Tensor:
        """The network's outputs (logits) for ``image`` ``(1, C, *spatial)``."""
        return self.model(image.float().to(self.device)).float().cpu()

    def __call__(
        self, image: torch.Tensor, index: int, *, score: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The map of output ``index`` for ``image`` ``(1, C, *spatial)``: ``(*spatial)`` on the CPU, from 0 (the
        scan's least salient voxel) to 1 (its most salient); a map equal everywhere is 0 everywhere.

        Args:
            image: the network input.
            index: the output explained.
            score: Grad-CAM's score of that output from the logits ``(B, outputs)`` and ``index`` (default: the
                output's logit); the task's choice (:meth:`~medtl.tasks.base.Task.saliency`).
        """
        x = image.float().to(self.device)
        if self._cam is not None:
            self._cam.nn_module.score_of = score or _logit
            with torch.enable_grad(), torch.inference_mode(False):
                # the input takes a gradient so a frozen body (a linear probe) still gives one at the target layer
                x = x.clone().requires_grad_(True)
                cam = self._cam(x, class_idx=int(index))
            m = cam.detach()[0, 0]
        else:
            m = self._occlusion(x, int(index))
        m = torch.nan_to_num(m.float(), nan=0.0).clamp_min(0.0)
        if not m.numel():
            return m.cpu()
        m = m - m.min()
        top = float(m.max())
        return (m / top if top > 0 else m).cpu()

    @torch.no_grad()
    def _occlusion(self, x: torch.Tensor, index: int) -> torch.Tensor:
        from monai.visualize import OcclusionSensitivity

        mask = [max(1, round(s * OCCLUSION_FRACTION)) for s in x.shape[2:]]
        occ = OcclusionSensitivity(
            self.model,
            mask_size=mask,
            n_batch=16,
            verbose=False,
            mode="mean_img",
            overlap=OCCLUSION_OVERLAP,
            activate=self.scores,
        )
        with warnings.catch_warnings():  # MONAI indexes with a list of slices, which torch says it will deprecate
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            sensitivity, _ = occ(x)
        full = self.scores(self.model(x))[0, index]
        return (full - sensitivity[0, index]).as_subclass(torch.Tensor)


# ------------------------------------------------------------------------------------------------ pictures


def _rescaled(m: np.ndarray) -> np.ndarray:
    """``m`` from 0 (its smallest value) to 1 (its largest); a flat map is 0 everywhere."""
    m = np.nan_to_num(m, nan=0.0) - (float(np.nanmin(m)) if m.size else 0.0)
    top = float(m.max()) if m.size else 0.0
    return (m / top if top > 0 else np.zeros_like(m)).astype(np.float32)


def _spacing(affine: Any, dims: int) -> list[float]:
    a = np.asarray(affine, dtype=np.float64)
    return [float(v) if v > 0 else 1.0 for v in np.linalg.norm(a[:dims, :dims], axis=0)]


def render_saliency(
    image: Any,
    saliency: Any,
    *,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    size: int = PNG_SIZE,
) -> tuple[bytes, int | None]:
    """One saliency PNG: the scan in grey, the map in colour over it (see the module docstring).

    Args:
        image: the scan ``(C, *spatial)``; channel 0 is drawn. 2D: ``(C, columns, rows)`` as medtl's reader lays a 2D
            image out; 3D: ``(C, x, y, z)`` in RAS.
        saliency: the map, ``(*spatial)`` or ``(1, *spatial)`` (values in ``[0, 1]``).
        spacing: voxel size per spatial axis (None: square pixels).
        title: text drawn in the top-left corner.
        size: the longest side of the PNG, in pixels.

    Returns:
        The PNG's bytes and the axial slice drawn (None for a 2D image).

    Raises:
        ValueError: the map's shape differs from the image's, or the image is not 2D or 3D.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medtl.train.overlay import _as_array, _pixel_size, display_range

    img = _as_array(image).astype(np.float64)[0]
    sal = _as_array(saliency).astype(np.float64)
    if sal.ndim == img.ndim + 1:
        sal = sal[0]
    if img.ndim not in (2, 3):
        raise ValueError(f"a saliency picture needs a 2D or 3D image, but it is {img.ndim}D (shape {img.shape})")
    if sal.shape != img.shape:
        raise ValueError(f"the saliency map has shape {sal.shape}, but the image has {img.shape}")
    sp = [float(s) for s in spacing] if spacing is not None else [1.0] * img.ndim
    if img.ndim == 3:
        sums = sal.reshape(-1, sal.shape[-1]).sum(axis=0)
        k: int | None = int(np.argmax(sums)) if sums.max() > sums.min() else sal.shape[-1] // 2

        def view(a: np.ndarray) -> np.ndarray:  # (x, y) RAS -> rows anterior first, columns patient-right first
            return np.ascontiguousarray(a[:, :, k][::-1, ::-1].T)
    else:
        k = None

        def view(a: np.ndarray) -> np.ndarray:  # (columns, rows) -> as displayed
            return np.ascontiguousarray(a.T)

    aspect = sp[1] / sp[0]
    g, s = view(img), view(sal)
    width, height = _pixel_size(g.shape, aspect, size)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    vmin, vmax = display_range(g)
    ax.imshow(g, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    ax.imshow(s, cmap="jet", vmin=0.0, vmax=1.0, alpha=_ALPHA, interpolation="bilinear", aspect="auto")
    parts = [title, None if k is None else f"slice {k}"]
    ax.text(
        0.01, 0.99, "  ".join(p for p in parts if p), transform=ax.transAxes, ha="left", va="top", fontsize=7,
        color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 2, "linewidth": 0},
    )  # fmt: skip
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue(), k


# ------------------------------------------------------------------------------------------------ files


def saliency_name(image: str, used: set[str]) -> str:
    """``<scan name>_saliency`` for a scan path (a NIfTI's name without ``.nii.gz``, a DICOM file's stem or folder's
    name), unique among ``used`` (compared with case ignored); the files add ``.nii.gz`` and ``.png``."""
    from medtl.train.overlay import overlay_name

    taken = {u.lower() for u in used}
    stem = overlay_name(image, set())[: -len(".png")]
    name, i = f"{stem}_saliency", 1
    while name.lower() in taken:
        name, i = f"{stem}_{i}_saliency", i + 1
    used.add(name)
    return name


def write_saliency(
    model: nn.Module,
    task: Any,
    config: Any,
    pipeline: Any,
    records: Sequence[dict[str, Any]],
    folder: str | Path,
    *,
    method: str = "gradcam",
    target: str | None = None,
    device: str | torch.device = "cpu",
    nifti: bool = True,
) -> list[dict[str, Any]]:
    """Saliency maps of scans on their own grids: ``<scan>_saliency.nii.gz`` (with ``nifti``) and
    ``<scan>_saliency.png`` in ``folder``.

    Args:
        model: the run's network (a :class:`~medtl.models.MedtlModel`).
        task: the run's task, which says which output each map explains (:meth:`~medtl.tasks.base.Task.saliency`).
        config: the run's config.
        pipeline: the run's :class:`~medtl.transforms.presets.Pipeline` (its input record and ``post_eval``).
        records: the scans (``image``, optional ``series``).
        folder: where the files go (created).
        method: one of :data:`SALIENCY_METHODS`.
        target: the output to explain in every scan (a class name), or None for the task's default (the predicted
            class).
        device: where the maps are computed.
        nifti: also write the maps as NIfTI (a run folder keeps the PNGs only).

    Returns:
        One row per scan: ``image``, ``saliency_class`` (the output explained), ``saliency_png`` and, with
        ``nifti``, ``saliency_file``.

    Raises:
        TrainingError: a 2.5D run, or a task that has no saliency maps.
        DataLoadError: a scan that cannot be read (named).
    """
    import gzip

    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import Compose, Invertd, Orientation

    from medtl.io.dicom_seg import _affine_4x4
    from medtl.transforms.checks import Guard
    from medtl.utils import atomic_write_bytes

    transforms = native_transforms(config, pipeline.record)
    explainer = SaliencyExplainer(model, method, scores=task.outputs_to_scores, device=device)
    load = Guard(Compose(transforms.transforms[:2], log_stats=False), "reading")
    rest = Guard(Compose(transforms.transforms[2:], log_stats=False), "preprocessing")
    invert = Invertd(keys="saliency", transform=transforms, orig_keys=_KEY, nearest_interp=False, to_tensor=True)
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedtlError(
            f"cannot create the saliency folder {out} ({exc.strerror or exc})",
            path=str(out),
            fix="free space or make the folder writable, then run the command again",
        ) from None
    used: set[str] = set()
    rows: list[dict[str, Any]] = []
    for r in records:
        item: dict[str, Any] = {_KEY: str(r["image"])} | ({"series": r["series"]} if r.get("series") else {})
        if r.get("row") not in (None, ""):
            item["row"] = r["row"]
        scan = load(item)
        native = scan[_KEY].clone()
        d = rest(scan)
        x = pipeline.post_eval({_KEY: d[_KEY]})[_KEY]
        saliency, explained = task.saliency(explainer, x[None], target=target)
        d["saliency"] = MetaTensor(saliency[None].float(), meta=dict(d[_KEY].meta))
        inverted = invert(d)["saliency"]
        grid = _rescaled(np.asarray(inverted[0], dtype=np.float32))  # interpolation moved the extremes a little
        name = saliency_name(str(r["image"]), used)
        row: dict[str, Any] = {"image": str(r["image"]), "saliency_class": explained}
        dims = grid.ndim
        if nifti:
            data = grid[..., None] if dims == 2 else grid
            image = nib.Nifti1Image(data, _affine_4x4(inverted.affine))
            image.header.set_xyzt_units("mm")
            image.set_qform(image.affine, code=1)
            path = out / f"{name}.nii.gz"
            atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
            row["saliency_file"] = str(path)
        shown, shown_map = native, MetaTensor(torch.as_tensor(grid)[None], affine=native.affine)
        if dims == 3:  # drawn in RAS, whatever the scan's own orientation
            ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
            shown, shown_map = ras(shown), ras(shown_map)
        png, _ = render_saliency(
            shown,
            shown_map,
            spacing=_spacing(shown.affine, dims),
            title=f"{Path(str(r['image'])).name}  {explainer.words}: {explained}",
        )
        atomic_write_bytes(out / f"{name}.png", png)
        row["saliency_png"] = str(out / f"{name}.png")
        rows.append(row)
    return rows
