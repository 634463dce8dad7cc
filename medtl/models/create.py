"""``create_model``: an architecture from the registry, weights from a source, adapted and reported.

An experiment resolves its weight source once (:func:`weight_source_for`), asks :func:`expected_input` what input
the model and its weights expect (channels, intensity normalisation), builds its transforms from that answer, and
passes the same :class:`WeightSource` object to :func:`create_model`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from medtl.backbones.adapt import set_submodule
from medtl.backbones.inflate import inflate_network
from medtl.backbones.registry import PYRAMID, ArchSpec, format_name, get_architecture, split_options
from medtl.errors import UnknownOptionError
from medtl.models.load import LoadReport, load_into, read_source_state
from medtl.models.model import MedtlModel
from medtl.utils import look_up_option
from medtl.weights.cache import resolve_weight_file
from medtl.weights.sources import Normalization, WeightSource, get_weight_source, sources_for_arch
from medtl.weights.verify import check_weight_file

if TYPE_CHECKING:
    from medtl.models.segmentation import SegmentationModel

__all__ = [
    "create_model",
    "weight_source_for",
    "expected_input",
    "ExpectedInput",
    "library_source",
    "arch_for_weights",
]

logger = logging.getLogger(__name__)


def _resolve_dims(spec: ArchSpec, source: WeightSource, spatial_dims: int | None) -> int:
    if spatial_dims is None:
        spatial_dims = source.dims or spec.dims
    if spatial_dims not in spec.supported_dims:
        raise UnknownOptionError(
            f"architecture {spec.name!r} is {spec.dims}D only, got spatial_dims={spatial_dims}; use one of the "
            f"{spatial_dims}D architectures (see `medtl backbones`)"
        )
    return spatial_dims


# The source name that means a network library's own pretrained weights for its architectures (timm's default tag).
LIBRARY_WEIGHTS = "imagenet"


def library_source(spec: ArchSpec) -> WeightSource | None:
    """The weight source of the pretrained weights the network's own library publishes for ``spec`` (timm's default
    tag, from its ``pretrained_cfg``), or ``None``. Its normalisation is the tag's mean and std."""
    if spec.load_pretrained is None:
        return None
    cfg = dict(spec.pretrained_cfg or {})
    where = cfg.get("hf_hub_id") or cfg.get("url") or "?"
    mean, std = cfg.get("mean"), cfg.get("std")
    size = cfg.get("input_size")
    return WeightSource(
        name=LIBRARY_WEIGHTS,
        description=f"{spec.family} pretrained weights of {spec.name} (tag {cfg.get('tag')!r}, {where}), downloaded "
        f"by {spec.family}",
        dims=spec.dims,
        archs=(spec.name,),
        in_channels=int(size[0]) if size else spec.default_in_channels,
        normalization=Normalization("imagenet", tuple(mean), tuple(std)) if mean and std else Normalization("none"),
        license=str(cfg.get("license") or "see the model card of " + where),
        citation=f"Wightman R. PyTorch Image Models (timm), github.com/huggingface/pytorch-image-models; weights "
        f"{where}: cite the paper named on its model card.",
        input_size=tuple(int(n) for n in size[1:]) if size else None,
    )


def _library_weights(spec: ArchSpec, source: WeightSource) -> WeightSource | None:
    """``source`` as the library's own weights of ``spec`` when it names them, else ``None``."""
    if source.name != LIBRARY_WEIGHTS or source.path is not None:
        return None
    return library_source(spec)


def _fits(source: WeightSource, spec: ArchSpec) -> bool:
    """Whether ``source`` has weights for ``spec``, its architectures compared by canonical name (size options in
    any order: ``swin_unetr_3d[window_size=4,feature_size=12]`` is ``swin_unetr_3d[feature_size=12,window_size=4]``)."""
    return source.fits(spec.name) or any(format_name(*split_options(a)) == spec.name for a in source.archs)


def arch_for_weights(arch: str | None, weights: str | os.PathLike[str] | WeightSource) -> str:
    """``arch``, or when it is ``None`` the one architecture the weight source has weights for.

    Raises:
        UnknownOptionError: no ``arch`` and the source fits several architectures (or any).
    """
    if arch is not None:
        return arch
    source = get_weight_source(weights)
    if source.single_arch is None:
        fits = ", ".join(source.archs) if source.archs else "any architecture"
        raise UnknownOptionError(
            f"name an architecture: weight source {source.name!r} has weights for {fits}; only a source with weights "
            "for a single architecture implies it"
        )
    return source.single_arch


def weight_source_for(
    arch: str, weights: str | os.PathLike[str] | WeightSource = "scratch", *, spatial_dims: int | None = None
) -> WeightSource:
    """The weight source for a model of ``arch``, checked to fit it: resolve it once per experiment.

    ``"imagenet"`` for a 3D model (``spatial_dims=3``) becomes ``"imagenet-inflated"``; for a ``timm/`` architecture
    it means timm's own default pretrained tag (:func:`library_source`).

    Args:
        arch: a registered architecture.
        weights: a source name, a checkpoint path, or a source resolved before (returned as it is when it fits).
        spatial_dims: 2 or 3; default: the source's, else the architecture's.

    Raises:
        UnknownOptionError: unknown architecture or source, a source without weights for ``arch``, or a source for
            other dims.
    """
    spec = get_architecture(arch)
    source = get_weight_source(weights)
    library = _library_weights(spec, source)
    if library is not None:
        source = library
    elif source.name == "imagenet" and spatial_dims == 3:
        source = get_weight_source("imagenet-inflated")
    dims = _resolve_dims(spec, source, spatial_dims)
    if not _fits(source, spec):
        fitting = ["scratch", *sources_for_arch(spec.name), "<checkpoint file>"]
        raise UnknownOptionError(
            f"weight source {source.name!r} has no weights for {spec.name!r} (it fits: {', '.join(source.archs)}); "
            f"weights for {spec.name}: {', '.join(fitting)}"
        )
    if source.dims is not None and source.dims != dims:
        raise UnknownOptionError(
            f"weight source {source.name!r} is for {source.dims}D models, but spatial_dims={dims} was asked; "
            f"drop spatial_dims or pick a {dims}D source"
        )
    return source


@dataclass(frozen=True)
class ExpectedInput:
    """What a model of one architecture with one weight source expects as input, by default.

    Attributes:
        in_channels: input channels: the weights' (ImageNet 3, MedicalNet 1, CT I3ResNet-152 3), else the data's
            when given, else the architecture's default.
        normalization: the intensity normalisation the weights were trained with (``none`` for random weights,
            a checkpoint file, or a source that does not publish one).
        spatial_dims: 2 or 3.
    """

    in_channels: int
    normalization: Normalization
    spatial_dims: int


def expected_input(
    source: WeightSource | str | os.PathLike[str],
    arch: str,
    *,
    spatial_dims: int | None = None,
    data_channels: int | None = None,
) -> ExpectedInput:
    """The input channels and intensity normalisation a model of ``arch`` with ``source`` expects by default.

    The transforms and :func:`create_model` both read this answer, so the pipeline gives the model the channels
    it was built for.

    Args:
        source: the resolved weight source (see :func:`weight_source_for`; a name or path is resolved here).
        arch: a registered architecture.
        spatial_dims: 2 or 3, as for :func:`create_model`.
        data_channels: the data's channels, used when the weights do not fix a count (random weights, files).
    """
    spec = get_architecture(arch)
    source = weight_source_for(spec.name, source, spatial_dims=spatial_dims)
    return ExpectedInput(
        in_channels=source.in_channels or data_channels or spec.default_in_channels,
        normalization=source.normalization,
        spatial_dims=_resolve_dims(spec, source, spatial_dims),
    )


#: the heads :func:`create_model` puts on an architecture: a linear classifier on pooled features, or a U-Net decoder
HEADS = ("linear", "unet")


def create_model(
    arch: str | None = None,
    weights: str | os.PathLike[str] | WeightSource = "scratch",
    *,
    in_channels: int | None = None,
    num_classes: int = 2,
    spatial_dims: int | None = None,
    head: str = "linear",
    decoder_channels: Sequence[int] | None = None,
) -> MedtlModel | SegmentationModel:
    """Build architecture ``arch`` with initial weights from ``weights``.

    Args:
        arch: a registered architecture (``medtl.list_architectures()``), e.g. ``"resnet18"``,
            ``"resnet50_3d"``, ``"swin_unetr_3d"``, ``"segresnet_3d"``, or any timm model as ``"timm/<name>"``;
            size options in brackets, e.g. ``"swin_unetr_3d[feature_size=24]"``. ``None``: the architecture of a
            weight source that has weights for one (``create_model(weights="rad-dino")``).
        weights: ``"scratch"``, ``"imagenet"`` (timm's default tag for a ``timm/`` architecture),
            ``"imagenet-inflated"``, ``"medicalnet"``, ``"medicalnet23"``, ``"ct-i3resnet152"``, a checkpoint file
            (torchvision, timm, MONAI, MedicalNet, Lightning, plain state dict, safetensors), or a
            :class:`WeightSource` resolved before (:func:`weight_source_for`).
        in_channels: input channels; default: :func:`expected_input` (the weights' count: ImageNet 3, MedicalNet 1;
            else the architecture's). When it differs from the weights', the first convolution is adapted (summed
            for one channel, repeated and rescaled for more) and the load report says so.
        num_classes: classifier outputs; the classifier stays random unless the checkpoint's has this size. 0 builds
            a headless model whose ``forward`` returns pooled features (linear probing, encoders).
        spatial_dims: 2 or 3; a 2D architecture with 3 (or ``weights="imagenet-inflated"``) is inflated to 3D.
        head: ``"linear"``: a linear classifier on the pooled features with ``num_classes`` outputs (classes,
            findings, a regressed value; 0: none). ``"unet"``: the architecture with ``weights`` as a headless encoder
            and MONAI's U-Net decoder (:class:`~medtl.models.segmentation.SegmentationModel`) with ``num_classes``
            output channels (for segmentation: the background included), reported as new.
        decoder_channels: ``head="unet"``: decoder block channels, deepest first (default 256, 128, 64, 32, 16).

    Returns:
        The model, with ``load_report`` (including the SHA-256 of the file loaded) and ``weight_source`` set.

    Raises:
        UnknownOptionError: unknown architecture or source, a source that has no weights for ``arch``, or a
            negative count.
        WeightsNotAvailableError: weights not cached and not downloadable (the message gives the import command).
        HashMismatchError: the cached file differs from its pinned hash or from the one recorded when cached.
        CheckpointMismatchError: the checkpoint does not fit the architecture.
        UnsafeCheckpointError: the checkpoint would need arbitrary unpickling.
        WeightsError: the checkpoint is unreadable or holds NaN/Inf values.
    """
    head = look_up_option(head, HEADS, what="head")
    arch = arch_for_weights(arch, weights)
    if head == "unet":
        from medtl.models.segmentation import DEFAULT_DECODER_CHANNELS, SegmentationModel

        # multi-scale from the start: a checkpoint that holds the feature pyramid (an encoder pretrained here) loads it
        encoder = _create(arch, weights, in_channels, 0, spatial_dims, multiscale=True)
        return SegmentationModel(encoder, num_classes, decoder_channels or DEFAULT_DECODER_CHANNELS)
    return _create(arch, weights, in_channels, num_classes, spatial_dims, multiscale=False)


def _create(
    arch: str,
    weights: str | os.PathLike[str] | WeightSource,
    in_channels: int | None,
    num_classes: int,
    spatial_dims: int | None,
    *,
    multiscale: bool,
) -> MedtlModel:
    """:func:`create_model` for one network; ``multiscale`` attaches the record's feature pyramid before loading."""
    spec = get_architecture(arch)
    source = weight_source_for(spec.name, weights, spatial_dims=spatial_dims)
    expected = expected_input(source, spec.name, spatial_dims=spatial_dims)
    dims = expected.spatial_dims
    if num_classes < 0:
        raise UnknownOptionError(f"num_classes must be >= 1, or 0 for a headless model; got {num_classes}")
    if in_channels is not None and in_channels < 1:
        raise UnknownOptionError(f"in_channels must be >= 1, got {in_channels}")
    in_channels = in_channels or expected.in_channels
    inflate = spec.dims == 2 and dims == 3

    if source.name == "scratch":
        net = _build(spec, in_channels, num_classes, empty=False)
        if inflate:
            inflate_network(net)
        if multiscale and spec.attach_pyramid(net):
            notes = [f"feature pyramid for multi-scale features new (random): {PYRAMID}"]
        else:
            notes = []
        report = LoadReport(source="scratch", arch=spec.name, left_random=list(net.state_dict()), notes=notes)
        report.verification = "no file: random initialisation"
        if inflate:
            report.notes.append("inflated to 3D (I3D layout, random kernels)")
    else:
        library = _library_weights(spec, source)
        checked = None
        if library is not None:  # downloaded (and cached) by the network's library itself
            cfg = dict(spec.pretrained_cfg or {})
            file = str(cfg.get("hf_hub_id") or cfg.get("url") or "")
            fmt = f"{spec.family} pretrained weights, tag {cfg.get('tag')!r}"
            state = spec.load_pretrained()
        else:
            path = resolve_weight_file(source, spec.name)
            checked = check_weight_file(source, spec.name, path)  # the file actually loaded, hashed before reading
            state, fmt = read_source_state(source, spec.name, path)  # a bad file fails before any model is built
            file = str(path)
        net = _build(spec, in_channels, num_classes, empty=True)
        checkpoint_is_3d = any(v.ndim == 5 for v in state.values())
        if inflate and checkpoint_is_3d:  # a 3D checkpoint of an inflated network: inflate first, then load
            inflate_network(net)
        if multiscale:
            spec.attach_pyramid(net)
        report = load_into(net, state, spec, source=source.name, file=file, fmt=fmt)
        _init_not_loaded(net, report)
        if inflate and not checkpoint_is_3d:
            inflate_network(net)
            n = sum(isinstance(m, nn.Conv3d) for m in net.modules())
            report.notes.append(
                f"inflated to 3D (I3D): {n} convolution kernels repeated over depth and divided by the depth"
            )
        report.restriction = source.restriction
        if checked is not None:
            report.sha256, report.verified = checked.sha256, checked.verified
            report.verification = checked.verification
        else:
            report.verification = f"unverified: downloaded and cached by {spec.family} from {file}; not hashed by medtl"
    if num_classes == 0:
        report.notes.append("headless (num_classes=0): no classifier; the model returns pooled features")
    model = MedtlModel(
        net,
        arch=spec.name,
        spatial_dims=dims,
        in_channels=in_channels,
        num_classes=num_classes,
        weight_source=source,
        load_report=report,
    )
    logger.info("%s", report.summary())
    return model


def _build(spec: ArchSpec, in_channels: int, num_classes: int, *, empty: bool) -> nn.Module:
    """The network; headless (classifier replaced by ``nn.Identity``) for ``num_classes=0``.

    ``empty=True`` leaves memory uninitialised when loading will overwrite every tensor but the head's: random
    initialisation of a deep 3D ResNet takes seconds and would be thrown away. Networks with buffers outside their
    state dict are built normally, since loading would not fill those.
    """

    def build() -> nn.Module:
        net = spec.build(in_channels=in_channels, num_classes=max(num_classes, 1))
        if num_classes == 0:
            set_submodule(net, spec.classifier, nn.Identity())
        return net

    if not empty:
        return build()
    with torch.device("meta"):
        net = build()
    in_state = set(net.state_dict())
    if any(name not in in_state for name, _ in net.named_buffers()):
        return build()
    return net.to_empty(device="cpu")


def _init_not_loaded(net: nn.Module, report: LoadReport) -> None:
    """Initialise what loading left untouched: the head (fresh random layer) and missing batch counters."""
    loaded = set(report.matched) | set(report.adapted)
    reset: set[str] = set()
    with torch.no_grad():
        for key, tensor in net.state_dict(keep_vars=True).items():
            if key in loaded:
                continue
            if key in report.left_random:
                module = key.rpartition(".")[0]
                if module not in reset:
                    net.get_submodule(module).reset_parameters()
                    reset.add(module)
            elif key.endswith("num_batches_tracked"):
                tensor.zero_()
            else:  # pragma: no cover - load_into raises before this can happen
                raise RuntimeError(f"{key} was neither loaded nor initialised")
