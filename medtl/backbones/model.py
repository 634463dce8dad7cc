"""``create_model``: an architecture from the registry, weights from a source, adapted and reported."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from medtl.backbones.adapt import set_submodule
from medtl.backbones.inflate import inflate_network
from medtl.backbones.registry import ArchSpec, get_architecture
from medtl.errors import UnknownOptionError

if TYPE_CHECKING:
    from medtl.weights.load import LoadReport
    from medtl.weights.sources import WeightSource

__all__ = ["MedtlModel", "ParamGroup", "create_model"]

logger = logging.getLogger(__name__)


@dataclass
class ParamGroup:
    """Parameters of one layer group (``stem``, ``stage1``... ``head``), for freezing and per-group rates.

    Attributes:
        name: group name.
        params: the parameters, in model order.
        param_names: their names in ``model.named_parameters()``.
    """

    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.params)


class MedtlModel(nn.Module):
    """A classification network with a uniform surface over every registered architecture.

    The wrapped network (``self.net``) keeps its native module names, so its checkpoints stay compatible with
    torchvision, MONAI and MedicalNet.

    Attributes:
        net: the wrapped network.
        arch: architecture name.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output classes.
        weight_source: where the initial weights came from.
        load_report: what loading those weights did.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        weight_source: WeightSource,
        load_report: LoadReport,
    ) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.weight_source = weight_source
        self.load_report = load_report

    @property
    def spec(self) -> ArchSpec:
        return get_architecture(self.arch)

    @property
    def num_features(self) -> int:
        """Size of the pooled features (the classifier's input)."""
        return self.spec.num_features

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = "X, Y" if self.spatial_dims == 2 else "X, Y, Z"
            raise ValueError(
                f"{self.arch} ({self.spatial_dims}D, {self.in_channels} input channels) expects input of shape "
                f"(B, {self.in_channels}, {axes}), but it is {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)``."""
        self._check_input(x)
        return self.spec.features(self.net, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features."""
        return self.spec.head(self.net, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.net.get_submodule(self.spec.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new random one with ``num_classes`` outputs."""
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        set_submodule(self.net, self.spec.classifier, new)
        self.num_classes = num_classes

    def param_groups(self) -> list[ParamGroup]:
        """Parameters grouped from stem to head; every parameter is in exactly one group."""
        groups = [ParamGroup(name) for name, _ in self.spec.groups]
        for name, param in self.net.named_parameters():
            for group, (_, prefixes) in zip(groups, self.spec.groups, strict=True):
                if any(name == p or name.startswith(p + ".") for p in prefixes):
                    group.params.append(param)
                    group.param_names.append(f"net.{name}")
                    break
            else:  # pragma: no cover - a registry record that misses a module is a bug
                raise RuntimeError(f"{self.arch}: parameter {name} belongs to no layer group")
        return groups

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_classes={self.num_classes}, weights={self.weight_source.name!r}"
        )


def _resolve_dims(spec: ArchSpec, source: WeightSource, spatial_dims: int | None) -> int:
    if spatial_dims is None:
        spatial_dims = source.dims or spec.dims
    if spatial_dims not in spec.supported_dims:
        raise UnknownOptionError(
            f"architecture {spec.name!r} is {spec.dims}D only, got spatial_dims={spatial_dims}; use one of the "
            f"{spatial_dims}D architectures (see `medtl backbones`)"
        )
    return spatial_dims


def create_model(
    arch: str,
    weights: str | os.PathLike[str] = "scratch",
    *,
    in_channels: int | None = None,
    num_classes: int = 2,
    spatial_dims: int | None = None,
) -> MedtlModel:
    """Build architecture ``arch`` with initial weights from ``weights``.

    Args:
        arch: a registered architecture (``medtl.list_architectures()``), e.g. ``"resnet18"``,
            ``"resnet50_3d"``.
        weights: ``"scratch"``, ``"imagenet"``, ``"imagenet-inflated"``, ``"medicalnet"``, ``"medicalnet23"``,
            ``"ct-i3resnet152"``, or a checkpoint file (torchvision, MedicalNet, Lightning, plain state dict,
            safetensors).
        in_channels: input channels; default: the weights' (ImageNet 3, MedicalNet 1), else the architecture's.
            When it differs from the weights', the first convolution is adapted (summed for one channel,
            repeated and rescaled for more) and the load report says so.
        num_classes: classifier outputs; the classifier stays random unless the checkpoint's has this size.
        spatial_dims: 2 or 3; a 2D architecture with 3 (or ``weights="imagenet-inflated"``) is inflated to 3D.

    Returns:
        The model, with ``load_report`` and ``weight_source`` set.

    Raises:
        UnknownOptionError: unknown architecture or source, or a source that has no weights for ``arch``.
        WeightsNotAvailableError: weights not cached and not downloadable (the message gives the import command).
        CheckpointMismatchError: the checkpoint does not fit the architecture.
        UnsafeCheckpointError: the checkpoint would need arbitrary unpickling.
    """
    from medtl.weights.cache import resolve_weight_file
    from medtl.weights.load import LoadReport, load_checkpoint, load_into
    from medtl.weights.sources import get_weight_source

    spec = get_architecture(arch)
    source = get_weight_source(weights)
    if source.name == "imagenet" and spatial_dims == 3:
        source = get_weight_source("imagenet-inflated")
    dims = _resolve_dims(spec, source, spatial_dims)
    if not source.fits(spec.name):
        fitting = [n for n in _sources_for(spec.name)]
        raise UnknownOptionError(
            f"weight source {source.name!r} has no weights for {spec.name!r} (it fits: {', '.join(source.archs)}); "
            f"weights for {spec.name}: {', '.join(fitting)}"
        )
    if source.dims is not None and source.dims != dims:
        raise UnknownOptionError(
            f"weight source {source.name!r} is for {source.dims}D models, but spatial_dims={dims} was asked; "
            f"drop spatial_dims or pick a {dims}D source"
        )
    if num_classes < 1:
        raise UnknownOptionError(f"num_classes must be >= 1, got {num_classes}")
    in_channels = in_channels or source.in_channels or spec.default_in_channels
    inflate = spec.dims == 2 and dims == 3

    load = dict(
        arch=spec.name,
        head_prefixes=spec.head_prefixes,
        first_conv=spec.first_conv_key,
        key_fixup=spec.key_fixup,
        tensor_fixup=spec.tensor_fixup,
        source=source.name,
    )
    if source.name == "scratch":
        net = spec.build(in_channels=in_channels, num_classes=num_classes)
        if inflate:
            inflate_network(net)
        report = LoadReport(source="scratch", arch=spec.name, left_random=list(net.state_dict()))
        if inflate:
            report.notes.append("inflated to 3D (I3D layout, random kernels)")
    else:
        path = resolve_weight_file(source, spec.name)
        state, fmt = load_checkpoint(path)  # a bad file fails before any model is built
        net = _build_for_loading(spec, in_channels, num_classes)
        checkpoint_is_3d = any(v.ndim == 5 for v in state.values())
        if inflate and checkpoint_is_3d:  # a 3D checkpoint of an inflated network: inflate first, then load
            inflate_network(net)
            report = load_into(net, state, file=str(path), fmt=fmt, **load)
            _init_not_loaded(net, report)
        else:
            report = load_into(net, state, file=str(path), fmt=fmt, **load)
            _init_not_loaded(net, report)
            if inflate:
                inflate_network(net)
                n = sum(isinstance(m, nn.Conv3d) for m in net.modules())
                report.notes.append(
                    f"inflated to 3D (I3D): {n} convolution kernels repeated over depth and divided by the depth"
                )
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


def _build_for_loading(spec: ArchSpec, in_channels: int, num_classes: int) -> nn.Module:
    """The network with uninitialised memory, when loading will overwrite every tensor but the head's.

    Random initialisation of a deep 3D ResNet takes seconds and would be thrown away. Networks with buffers
    outside their state dict are built normally, since loading would not fill those.
    """
    with torch.device("meta"):
        net = spec.build(in_channels=in_channels, num_classes=num_classes)
    in_state = set(net.state_dict())
    if any(name not in in_state for name, _ in net.named_buffers()):
        return spec.build(in_channels=in_channels, num_classes=num_classes)
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


def _sources_for(arch: str) -> list[str]:
    from medtl.weights.sources import get_weight_source, list_weight_sources

    names = ["scratch"]
    names += [n for n in list_weight_sources() if get_weight_source(n).archs and get_weight_source(n).fits(arch)]
    return names + ["<checkpoint file>"]
