"""``tiny_vit_5m_sam``: the TinyViT-5M image encoder of MobileSAM and LiteMedSAM, on timm's TinyViT modules.

SAM's TinyViT is not timm's ``tiny_vit_5m_224``: its patch embedding is two 1x1 convolutions with stride 1 (timm's:
3x3, stride 2 each), its last patch merging keeps the resolution (stride 1; MobileSAM's ``PatchMerging`` for 320
channels), and a neck follows the last stage (1x1 convolution to 256 channels, LayerNorm2d, 3x3 convolution,
LayerNorm2d), with no classification head. The layer shapes of the stages are timm's, so the network is timm's
``TinyVit`` with those three parts changed, and a LiteMedSAM file loads into it after the renaming of
:func:`medtl.weights.zoo.litemedsam_to_tiny_vit`.

Scales: the first stage at full input resolution (64 channels), the second at 1/2 (128), and the neck at 1/4 (256
channels, after the third and fourth stages, which both run at 1/4). Pooled features are the mean of the neck's
output (LiteMedSAM's image embedding); a linear ``head`` classifies them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from medtl.backbones.registry import ArchSpec, Stage, register_architecture

__all__ = ["build_tiny_vit_sam"]

_NECK = 256


def build_tiny_vit_sam(*, in_channels: int = 3, num_classes: int = 2) -> nn.Module:
    """timm's ``TinyVit`` (5M: dims 64, 128, 160, 320; depths 2, 2, 6, 2) with SAM's patch embedding, last merge and
    neck, and a linear head on the pooled neck output."""
    from timm.layers import LayerNorm2d
    from timm.models.tiny_vit import ConvNorm, TinyVit

    net = TinyVit(
        in_chans=in_channels,
        num_classes=0,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        drop_path_rate=0.0,
    )
    net.patch_embed.conv1 = ConvNorm(in_channels, 32, 1, 1, 0)
    net.patch_embed.conv2 = ConvNorm(32, 64, 1, 1, 0)
    net.stages[3].downsample.conv2.conv.stride = (1, 1)
    net.neck = nn.Sequential(
        nn.Conv2d(320, _NECK, kernel_size=1, bias=False),
        LayerNorm2d(_NECK),
        nn.Conv2d(_NECK, _NECK, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(_NECK),
    )
    net.head = nn.Linear(_NECK, num_classes)
    return net


def _embedding(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.neck(net.stages(net.patch_embed(x)))


def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _embedding(net, x).mean(dim=(2, 3))


def _head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.head(f)


def _scales(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    x = net.stages[0](net.patch_embed(x))
    yield x
    x = net.stages[1](x)
    yield x
    yield net.neck(net.stages[3](net.stages[2](x)))


register_architecture(
    ArchSpec(
        name="tiny_vit_5m_sam",
        family="timm-sam",
        dims=2,
        inflatable=False,
        default_in_channels=3,
        num_features=_NECK,
        build=build_tiny_vit_sam,
        features=_features,
        head=_head,
        stages=(Stage("stages.0", ()), Stage("stages.1", ()), Stage("neck", ())),
        classifier="head",
        first_conv="patch_embed.conv1.conv",
        groups=(
            ("stem", ("patch_embed",)),
            ("stage1", ("stages.0",)),
            ("stage2", ("stages.1",)),
            ("stage3", ("stages.2",)),
            ("stage4", ("stages.3", "neck")),
            ("head", ("head",)),
        ),
        description="TinyViT-5M image encoder of MobileSAM / LiteMedSAM (1x1 patch embedding, SAM neck; scales 1, "
        "1/2, 1/4), the network of the litemedsam weights",
        stage_forward=_scales,
        trace_size=64,
    )
)
