"""The architecture registry: each architecture is a record with a builder, its scales and its layer groups.

A record (:class:`ArchSpec`) says how to build the network, how to get pooled features and logits from it, which
modules lead to each scale of its feature pyramid (for encoders), where its first convolution and classifier are
(for channel adaptation and the head), and how its layers group from stem to head (for freezing and per-group
learning rates). Families register their records on import: :mod:`medtl.backbones.torchvision2d` (2D ImageNet
CNNs) and :mod:`medtl.backbones.medicalnet3d` (3D ResNets). Weights are not known here: :mod:`medtl.models` joins
an architecture and a weight source.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from medtl.utils import look_up_option

__all__ = ["ArchSpec", "Stage", "run_stages", "register_architecture", "get_architecture", "list_architectures"]

_FAMILIES = ("medtl.backbones.torchvision2d", "medtl.backbones.medicalnet3d")


@dataclass(frozen=True)
class Stage:
    """One scale of an encoder's feature pyramid.

    Attributes:
        name: the scale's name (``"stem"``, ``"layer1"``...).
        modules: dotted paths of the modules that lead from the previous scale's output to this one, run in order.
    """

    name: str
    modules: tuple[str, ...]


def run_stages(net: nn.Module, stages: tuple[Stage, ...], x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Feature maps of ``net`` at each scale in turn; stop iterating to skip the deeper layers."""
    for stage in stages:
        for path in stage.modules:
            x = net.get_submodule(path)(x)
        yield x


@dataclass(frozen=True)
class ArchSpec:
    """An architecture.

    Attributes:
        name: registry name (``"resnet18"``, ``"resnet50_3d"``...).
        family: ``"torchvision"`` or ``"monai-resnet"``.
        dims: spatial dims of the network as built (2 or 3).
        inflatable: whether the 2D network can be inflated to 3D (I3D).
        default_in_channels: input channels when neither the caller nor the weights say otherwise.
        num_features: size of the pooled features fed to the classifier.
        build: ``build(in_channels=..., num_classes=...)`` returns the network (random weights).
        features: ``features(net, x)`` returns pooled features ``(B, num_features)``, for 2D or inflated 3D nets.
        head: ``head(net, features)`` returns logits (dropout included where the network has it).
        stages: the scales of the feature pyramid, from the stem down (see :func:`run_stages`).
        classifier: dotted path of the final ``nn.Linear``.
        first_conv: dotted path of the first convolution.
        groups: ``(group name, module path prefixes)`` from stem to head; every parameter is in exactly one.
        key_fixup: renames legacy checkpoint keys before matching (or ``None``).
        tensor_fixup: ``tensor_fixup(key, tensor)`` converts checkpoint tensors to this network's layout (or
            ``None``), e.g. kernels trained on ``(D, H, W)`` volumes for medtl's ``(X, Y, Z)``.
        description: one line for listings.
    """

    name: str
    family: str
    dims: int
    inflatable: bool
    default_in_channels: int
    num_features: int
    build: Callable[..., nn.Module]
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    stages: tuple[Stage, ...]
    classifier: str
    first_conv: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    key_fixup: Callable[[str], str] | None = None
    tensor_fixup: Callable[[str, torch.Tensor], torch.Tensor] | None = None
    description: str = ""

    @property
    def head_prefixes(self) -> tuple[str, ...]:
        return (self.classifier + ".",)

    @property
    def first_conv_key(self) -> str:
        return self.first_conv + ".weight"

    @property
    def supported_dims(self) -> tuple[int, ...]:
        return (2, 3) if self.inflatable else (self.dims,)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "dims": list(self.supported_dims),
            "default_in_channels": self.default_in_channels,
            "num_features": self.num_features,
            "stages": [s.name for s in self.stages],
            "description": self.description,
        }


_REGISTRY: dict[str, ArchSpec] = {}
_loaded = False


def register_architecture(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to the registry (a later record with the same name replaces the earlier one)."""
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _FAMILIES:
            importlib.import_module(module)


def list_architectures() -> list[str]:
    """Names of the registered architectures."""
    _ensure_loaded()
    return list(_REGISTRY)


def get_architecture(name: str) -> ArchSpec:
    """The record of architecture ``name``.

    Raises:
        UnknownOptionError: ``name`` is not registered (with the closest name).
    """
    _ensure_loaded()
    return _REGISTRY[look_up_option(name, list(_REGISTRY), what="architecture")]
