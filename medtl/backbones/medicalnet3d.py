"""3D ResNets on MONAI's ``ResNet``, built the way each MedicalNet checkpoint needs.

MedicalNet (Med3D) files differ per depth in their shortcut: type ``A`` (parameter-free, zero-padded identity)
for ResNet-18 and -34, type ``B`` (1x1x1 convolution + batch norm, without bias) for 10, 50, 101, 152 and 200.
MONAI records this in :func:`monai.networks.nets.resnet.get_medicalnet_pretrained_resnet_args`; building with
its default ``bias_downsample=True`` is what gives the missing ``downsample.0.bias`` keys users hit (MONAI issues
2836, 7923). The first convolution is 7x7x7 with stride 2, as in MedicalNet and MONAI's ``ResNetFeatures``.

``i3resnet152_3d`` is the network of the optional CT-pretrained source ``ct-i3resnet152``
(:data:`I3RESNET152_KWARGS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medtl.backbones.registry import ArchSpec, Stage, register_architecture

__all__ = [
    "MedicalNetDepth",
    "MEDICALNET_RESNETS",
    "I3RESNET152_KWARGS",
    "depth_for_layers",
    "resnet_kwargs",
    "dhw_to_xyz",
]

# MONAI ``ResNet`` arguments under which the CT I3ResNet-152 checkpoint (weight source ``ct-i3resnet152``) loads
# strictly, in the checkpoint's own (D, H, W) axis order.
I3RESNET152_KWARGS: dict = {
    "block": "bottleneck",
    "layers": [3, 8, 36, 3],
    "block_inplanes": [64, 128, 256, 512],
    "n_input_channels": 3,
    "conv1_t_size": (3, 7, 7),
    "conv1_t_stride": (1, 2, 2),
    "shortcut_type": "B",
    "bias_downsample": False,
}


@dataclass(frozen=True)
class MedicalNetDepth:
    """Block type and blocks per stage of one ResNet depth."""

    depth: int
    block: str
    layers: tuple[int, int, int, int]

    @property
    def shortcut_type(self) -> str:
        from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

        return get_medicalnet_pretrained_resnet_args(self.depth)[1]

    @property
    def bias_downsample(self) -> bool:
        from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

        return bool(get_medicalnet_pretrained_resnet_args(self.depth)[0])


MEDICALNET_RESNETS: dict[int, MedicalNetDepth] = {
    d.depth: d
    for d in (
        MedicalNetDepth(10, "basic", (1, 1, 1, 1)),
        MedicalNetDepth(18, "basic", (2, 2, 2, 2)),
        MedicalNetDepth(34, "basic", (3, 4, 6, 3)),
        MedicalNetDepth(50, "bottleneck", (3, 4, 6, 3)),
        MedicalNetDepth(101, "bottleneck", (3, 4, 23, 3)),
        MedicalNetDepth(152, "bottleneck", (3, 8, 36, 3)),
        MedicalNetDepth(200, "bottleneck", (3, 24, 36, 3)),
    )
}


def depth_for_layers(layers: list[int] | tuple[int, ...], bottleneck: bool) -> int | None:
    """The ResNet depth with these blocks per stage, or ``None``."""
    block = "bottleneck" if bottleneck else "basic"
    for d in MEDICALNET_RESNETS.values():
        if d.block == block and list(d.layers) == list(layers):
            return d.depth
    return None


def resnet_kwargs(depth: int) -> dict:
    """Arguments of MONAI's ``ResNet`` that match MedicalNet's ResNet-``depth`` checkpoint."""
    d = MEDICALNET_RESNETS[depth]
    return {
        "block": d.block,
        "layers": list(d.layers),
        "block_inplanes": [64, 128, 256, 512],
        "spatial_dims": 3,
        "conv1_t_size": 7,
        "conv1_t_stride": 2,
        "shortcut_type": d.shortcut_type,
        "bias_downsample": d.bias_downsample,
    }


def _builder(kwargs: dict):
    def build(*, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets import ResNet

        return ResNet(**kwargs, n_input_channels=in_channels, num_classes=num_classes, feed_forward=True)

    return build


def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.act(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return x.mean(dim=tuple(range(2, x.ndim)))


def _head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.fc(f)


# The builders keep MONAI's max pool (no_max_pool=False), so the first stage always runs it.
_STAGES = (
    Stage("stem", ("conv1", "bn1", "act")),
    Stage("layer1", ("maxpool", "layer1")),
    Stage("layer2", ("layer2",)),
    Stage("layer3", ("layer3",)),
    Stage("layer4", ("layer4",)),
)

_GROUPS = (
    ("stem", ("conv1", "bn1")),
    ("stage1", ("layer1",)),
    ("stage2", ("layer2",)),
    ("stage3", ("layer3",)),
    ("stage4", ("layer4",)),
    ("head", ("fc",)),
)


def _spec(name: str, kwargs: dict, in_channels: int, description: str, **extra) -> ArchSpec:
    expansion = 4 if kwargs["block"] == "bottleneck" else 1
    return ArchSpec(
        name=name,
        family="monai-resnet",
        dims=3,
        inflatable=False,
        default_in_channels=in_channels,
        num_features=kwargs["block_inplanes"][3] * expansion,
        build=_builder(kwargs),
        features=_features,
        head=_head,
        stages=_STAGES,
        classifier="fc",
        first_conv="conv1",
        groups=_GROUPS,
        description=description,
        **extra,
    )


for _depth, _d in MEDICALNET_RESNETS.items():
    register_architecture(
        _spec(
            f"resnet{_depth}_3d",
            resnet_kwargs(_depth),
            1,
            f"3D ResNet-{_depth} on MONAI ResNet, MedicalNet layout (shortcut {_d.shortcut_type})",
        )
    )


def dhw_to_xyz(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Reorder the spatial axes of a 3D kernel trained on ``(D, H, W)`` volumes for medtl's ``(X, Y, Z)``.

    X runs along columns (W), Y along rows (H), Z along slices (D): the spatial axes are reversed.
    """
    return tensor.permute(0, 1, 4, 3, 2) if tensor.ndim == 5 else tensor


def _i3resnet152_spec() -> ArchSpec:
    kwargs = {k: v for k, v in I3RESNET152_KWARGS.items() if k != "n_input_channels"}
    # the checkpoint's (D, H, W) stem (3x7x7, stride 1x2x2) in medtl's (X, Y, Z) order
    kwargs |= {"spatial_dims": 3, "conv1_t_size": (7, 7, 3), "conv1_t_stride": (2, 2, 1)}
    return _spec(
        "i3resnet152_3d",
        kwargs,
        3,
        "I3ResNet-152 on MONAI ResNet (7x7x3 stem), the network of the ct-i3resnet152 weights",
        tensor_fixup=dhw_to_xyz,
    )


register_architecture(_i3resnet152_spec())
