"""Architectures: a registry of 2D torchvision CNNs and 3D MONAI/MedicalNet ResNets, their feature scales and
layer groups, I3D inflation, and first-convolution adaptation. Weights are joined to them in :mod:`medtl.models`."""

from __future__ import annotations

from medtl.backbones.adapt import adapt_input_conv
from medtl.backbones.inflate import inflate_network
from medtl.backbones.registry import (
    ArchSpec,
    Stage,
    get_architecture,
    list_architectures,
    register_architecture,
    run_stages,
)

__all__ = [
    "ArchSpec",
    "Stage",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "run_stages",
    "inflate_network",
    "adapt_input_conv",
]
