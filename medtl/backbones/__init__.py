"""Architectures: a registry of 2D torchvision CNNs and 3D MONAI/MedicalNet ResNets, I3D inflation, and
:func:`create_model`, which builds one with weights from any source (see :mod:`medtl.weights`)."""

from __future__ import annotations

from medtl.backbones.adapt import adapt_input_conv
from medtl.backbones.inflate import inflate_network
from medtl.backbones.model import MedtlModel, ParamGroup, create_model
from medtl.backbones.registry import ArchSpec, get_architecture, list_architectures, register_architecture

__all__ = [
    "create_model",
    "MedtlModel",
    "ParamGroup",
    "ArchSpec",
    "get_architecture",
    "list_architectures",
    "register_architecture",
    "inflate_network",
    "adapt_input_conv",
]
