"""2D ImageNet CNNs from torchvision, registered with their layer groups.

The networks are torchvision's own modules, so torchvision checkpoints load with their keys unchanged. The
feature and head functions below avoid torchvision's ``forward`` (which hard-codes 2D pooling) so the same
functions serve the networks inflated to 3D.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from medtl.backbones.adapt import replace_conv_in_channels
from medtl.backbones.registry import ArchSpec, Stage, register_architecture

__all__ = ["TORCHVISION_ARCHS"]


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling over every spatial dim (2D or 3D)."""
    return x.mean(dim=tuple(range(2, x.ndim)))


def _builder(arch: str, first_conv: str):
    def build(*, in_channels: int = 3, num_classes: int = 2) -> nn.Module:
        import torchvision

        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if in_channels != 3:
            replace_conv_in_channels(net, first_conv, in_channels)
        return net

    return build


def _resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return _pool(x)


def _densenet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _pool(F.relu(net.features(x)))


def _sequential_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _pool(net.features(x))


def _convnext_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    norm = net.classifier[0]
    f = _pool(net.features(x))
    return F.layer_norm(f, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _fc_head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.fc(f)


def _classifier_head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.classifier(f)


def _convnext_head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.classifier[2](f)


_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _densenet_fixup(key: str) -> str:
    """torchvision's DenseNet files use the old names ``norm.1``; its loader renames them to ``norm1``."""
    m = _DENSENET_KEY.match(key)
    return m.group(1) + m.group(2) if m else key


def _seq(prefix: str, indices: range | list[int]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in indices)


def _stages(*stages: tuple[str, tuple[str, ...]]) -> tuple[Stage, ...]:
    return tuple(Stage(name, modules) for name, modules in stages)


def _sequential_stages(prefix: str, ends: list[int]) -> tuple[Stage, ...]:
    """Scales of a ``features`` Sequential, each ending after child ``ends[i]`` (strides 2, 4, 8, 16, 32 for
    MobileNet/EfficientNet, 4 to 32 for ConvNeXt: the taps timm uses)."""
    stages, start = [], 0
    for end in ends:
        stages.append(Stage(f"{prefix}.{end}", _seq(prefix, range(start, end + 1))))
        start = end + 1
    return tuple(stages)


_RESNET_STAGES = _stages(
    ("stem", ("conv1", "bn1", "relu")),
    ("layer1", ("maxpool", "layer1")),
    ("layer2", ("layer2",)),
    ("layer3", ("layer3",)),
    ("layer4", ("layer4",)),
)

# DenseNet: the last scale is norm5's output, before the ReLU that the pooled features apply.
_DENSENET_STAGES = _stages(
    ("stem", ("features.conv0", "features.norm0", "features.relu0")),
    ("denseblock1", ("features.pool0", "features.denseblock1")),
    ("denseblock2", ("features.transition1", "features.denseblock2")),
    ("denseblock3", ("features.transition2", "features.denseblock3")),
    ("denseblock4", ("features.transition3", "features.denseblock4", "features.norm5")),
)


def _resnet_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("stem", ("conv1", "bn1")),
        ("stage1", ("layer1",)),
        ("stage2", ("layer2",)),
        ("stage3", ("layer3",)),
        ("stage4", ("layer4",)),
        ("head", ("fc",)),
    )


def _spec(name: str, num_features: int, **kw) -> ArchSpec:
    first_conv = kw.pop("first_conv")
    return ArchSpec(
        name=name,
        family="torchvision",
        dims=2,
        inflatable=True,
        default_in_channels=3,
        num_features=num_features,
        build=_builder(name, first_conv),
        first_conv=first_conv,
        **kw,
    )


TORCHVISION_ARCHS: tuple[ArchSpec, ...] = (
    *(
        _spec(
            name,
            nf,
            features=_resnet_features,
            head=_fc_head,
            stages=_RESNET_STAGES,
            classifier="fc",
            first_conv="conv1",
            groups=_resnet_groups(),
            description=f"torchvision {name} (He et al. 2016)",
        )
        for name, nf in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048))
    ),
    _spec(
        "densenet121",
        1024,
        features=_densenet_features,
        head=_classifier_head,
        stages=_DENSENET_STAGES,
        classifier="classifier",
        first_conv="features.conv0",
        groups=(
            ("stem", ("features.conv0", "features.norm0")),
            ("stage1", ("features.denseblock1", "features.transition1")),
            ("stage2", ("features.denseblock2", "features.transition2")),
            ("stage3", ("features.denseblock3", "features.transition3")),
            ("stage4", ("features.denseblock4", "features.norm5")),
            ("head", ("classifier",)),
        ),
        key_fixup=_densenet_fixup,
        description="torchvision densenet121 (Huang et al. 2017)",
    ),
    _spec(
        "efficientnet_b0",
        1280,
        features=_sequential_features,
        head=_classifier_head,
        stages=_sequential_stages("features", [1, 2, 3, 5, 7]),
        classifier="classifier.1",
        first_conv="features.0.0",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", _seq("features", [1, 2])),
            ("stage2", _seq("features", [3, 4])),
            ("stage3", _seq("features", [5, 6])),
            ("stage4", _seq("features", [7, 8])),
            ("head", ("classifier",)),
        ),
        description="torchvision efficientnet_b0 (Tan & Le 2019)",
    ),
    _spec(
        "mobilenet_v2",
        1280,
        features=_sequential_features,
        head=_classifier_head,
        stages=_sequential_stages("features", [1, 3, 6, 13, 17]),
        classifier="classifier.1",
        first_conv="features.0.0",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", _seq("features", range(1, 4))),
            ("stage2", _seq("features", range(4, 7))),
            ("stage3", _seq("features", range(7, 14))),
            ("stage4", _seq("features", range(14, 19))),
            ("head", ("classifier",)),
        ),
        description="torchvision mobilenet_v2 (Sandler et al. 2018)",
    ),
    _spec(
        "convnext_tiny",
        768,
        features=_convnext_features,
        head=_convnext_head,
        stages=_sequential_stages("features", [1, 3, 5, 7]),
        classifier="classifier.2",
        first_conv="features.0.0",
        groups=(
            ("stem", ("features.0",)),
            ("stage1", ("features.1",)),
            ("stage2", _seq("features", [2, 3])),
            ("stage3", _seq("features", [4, 5])),
            ("stage4", _seq("features", [6, 7])),
            ("head", ("classifier",)),
        ),
        description="torchvision convnext_tiny (Liu et al. 2022)",
    ),
)

for _s in TORCHVISION_ARCHS:
    register_architecture(_s)
