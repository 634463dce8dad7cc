"""Architectures: a registry of 2D torchvision CNNs, 3D MONAI/MedicalNet ResNets, the encoders of MONAI's SwinUNETR
and SegResNetDS, and any timm model (``timm/<name>``), their feature scales and layer groups, I3D inflation, and
first-convolution adaptation. Weights are joined to them in :mod:`medtl.models`."""

from __future__ import annotations

from medtl.backbones.adapt import adapt_input_conv
from medtl.backbones.inflate import inflate_network
from medtl.backbones.registry import (
    ArchFamily,
    ArchSpec,
    Stage,
    get_architecture,
    list_architectures,
    list_families,
    register_architecture,
    register_family,
    run_stages,
)

__all__ = [
    "ArchSpec",
    "ArchFamily",
    "Stage",
    "get_architecture",
    "list_architectures",
    "list_families",
    "register_architecture",
    "register_family",
    "run_stages",
    "inflate_network",
    "adapt_input_conv",
]
