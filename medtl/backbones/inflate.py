"""Inflating a 2D CNN to 3D, I3D-style (Carreira & Zisserman 2017).

Every ``Conv2d`` becomes a 3D convolution whose kernel is the 2D kernel repeated over the new depth axis and
divided by the depth; ``BatchNorm2d``, pools and adaptive pools become their 3D twins; torchvision's ConvNeXt
pieces (channels-last ``Permute``, ``LayerNorm2d``, per-channel layer scale) get 3D versions.

The depth axis is the last one, as in medtl's (and MONAI's) ``(C, X, Y, Z)`` layout, so a 2D image ``(C, X, Y)``
is one slice of the volume. The depth kernel size and stride mirror the in-plane ones (isotropic 3D network);
along depth, padding replicates the edge slices instead of adding zeros. This makes the defining property hold
exactly, at every layer and for any depth: **on a volume whose slices all hold the same image, the inflated
network gives the 2D network's output on that image** (each depth window then sees copies of one slice, and the
kernel copies sum to the 2D kernel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "inflate_network",
    "InflatedConv3d",
    "InflatedMaxPool3d",
    "InflatedAvgPool3d",
    "ChannelsFirstLayerNorm",
]


def _depth_pads(depth: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> tuple[int, int]:
    """Replicate padding along depth: the 2D padding on both sides, more at the end if the volume is too thin."""
    span = dilation * (kernel - 1) + 1
    extra = max(0, span - (depth + 2 * pad))
    return pad, pad + extra


def _replicate_depth(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    parts = []
    if before:
        parts.append(x[..., :1].expand(*x.shape[:-1], before))
    parts.append(x)
    if after:
        parts.append(x[..., -1:].expand(*x.shape[:-1], after))
    return torch.cat(parts, dim=-1)


def _depth_of(value: int | tuple[int, ...]) -> int:
    return value[2] if isinstance(value, tuple) else value


class _ReplicateDepthPadding:
    """Mixin for a 3D conv or pool: pad depth by repeating the edge slices (in-plane padding stays the op's own).

    Zero padding along depth would break the defining property of inflation: a volume of identical slices must
    give the 2D network's output, also in the first and last slices.
    """

    def __init__(self, *args: Any, depth_padding: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.depth_padding = depth_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = _depth_pads(
            x.shape[-1],
            _depth_of(self.kernel_size),
            _depth_of(self.stride),
            self.depth_padding,
            _depth_of(getattr(self, "dilation", 1)),
        )
        return super().forward(_replicate_depth(x, before, after))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth_padding={self.depth_padding} (replicate)"


class InflatedConv3d(_ReplicateDepthPadding, nn.Conv3d):
    """A ``Conv3d`` whose depth padding replicates the edge slices (in-plane padding stays zeros)."""


class InflatedMaxPool3d(_ReplicateDepthPadding, nn.MaxPool3d):
    """A ``MaxPool3d`` whose depth padding replicates the edge slices."""


class InflatedAvgPool3d(_ReplicateDepthPadding, nn.AvgPool3d):
    """An ``AvgPool3d`` whose depth padding replicates the edge slices."""


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a channels-first tensor of any dimensionality (torchvision's
    ``LayerNorm2d`` for 2D and 3D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _inflate_conv(conv: nn.Conv2d) -> InflatedConv3d:
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = _pair(conv.padding) if not isinstance(conv.padding, str) else (None, None)
    if ph is None or conv.padding_mode != "zeros":
        raise NotImplementedError(f"cannot inflate {conv}: only zero, numeric padding is supported")
    kd, sd, pd = kh, sh, ph  # isotropic: depth mirrors the first in-plane axis
    dh, dw = conv.dilation
    new = InflatedConv3d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=(kh, kw, kd),
        stride=(sh, sw, sd),
        padding=(ph, pw, 0),
        dilation=(dh, dw, dh),
        groups=conv.groups,
        bias=conv.bias is not None,
        depth_padding=pd,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        if conv.weight.device.type != "meta":
            new.weight.copy_(conv.weight.unsqueeze(-1).expand(*conv.weight.shape, kd) / kd)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    new.train(conv.training)
    return new


def _inflate_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    new = nn.BatchNorm3d(
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device=bn.weight.device if bn.weight is not None else None,
        dtype=bn.weight.dtype if bn.weight is not None else None,
    )
    new.load_state_dict(bn.state_dict(), assign=bn.weight is not None and bn.weight.device.type == "meta")
    new.train(bn.training)
    return new


def _inflate_pool(pool: nn.Module) -> nn.Module:
    k = _pair(pool.kernel_size)
    s = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    p = _pair(pool.padding)
    if isinstance(pool, nn.MaxPool2d):
        d = _pair(pool.dilation)
        if d != (1, 1):
            raise NotImplementedError(f"cannot inflate {pool}: dilation")
        return InflatedMaxPool3d(
            (k[0], k[1], k[0]), (s[0], s[1], s[0]), (p[0], p[1], 0), ceil_mode=pool.ceil_mode, depth_padding=p[0]
        )
    if pool.divisor_override is not None:
        raise NotImplementedError(f"cannot inflate {pool}: divisor_override")
    return InflatedAvgPool3d(
        (k[0], k[1], k[0]),
        (s[0], s[1], s[0]),
        (p[0], p[1], 0),
        ceil_mode=pool.ceil_mode,
        count_include_pad=pool.count_include_pad,
        depth_padding=p[0],
    )


def _inflate_adaptive(pool: nn.Module) -> nn.Module:
    size = pool.output_size
    h, w = (size, size) if isinstance(size, int) or size is None else size
    depth = 1 if (h, w) == (1, 1) else h
    cls = nn.AdaptiveAvgPool3d if isinstance(pool, nn.AdaptiveAvgPool2d) else nn.AdaptiveMaxPool3d
    return cls((h, w, depth))


def _inflate_child(child: nn.Module) -> nn.Module | None:
    from torchvision.models.convnext import LayerNorm2d
    from torchvision.ops.misc import Permute

    if isinstance(child, nn.Conv2d):
        return _inflate_conv(child)
    if isinstance(child, nn.BatchNorm2d):
        return _inflate_bn(child)
    if isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
        return _inflate_pool(child)
    if isinstance(child, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _inflate_adaptive(child)
    if isinstance(child, LayerNorm2d):
        new = ChannelsFirstLayerNorm(child.normalized_shape, eps=child.eps, device="meta")
        new.weight, new.bias = child.weight, child.bias  # the same parameters, no copy
        return new
    if isinstance(child, Permute):
        if list(child.dims) == [0, 2, 3, 1]:
            return Permute([0, 2, 3, 4, 1])
        if list(child.dims) == [0, 3, 1, 2]:
            return Permute([0, 4, 1, 2, 3])
        raise NotImplementedError(f"cannot inflate Permute({child.dims})")
    if isinstance(child, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.ConvTranspose2d, nn.Upsample)):
        raise NotImplementedError(f"cannot inflate {type(child).__name__}")
    return None


def inflate_network(net: nn.Module) -> nn.Module:
    """Inflate a 2D network to 3D in place (and return it).

    Raises:
        NotImplementedError: the network holds a 2D-only layer medtl cannot inflate.
    """
    for name, child in list(net.named_children()):
        new = _inflate_child(child)
        if new is not None:
            setattr(net, name, new)
        else:
            inflate_network(child)
    # torchvision ConvNeXt blocks scale their output by a (C, 1, 1) parameter: give it a depth axis.
    scale = net._parameters.get("layer_scale")
    if scale is not None and scale.ndim == 3:
        net.layer_scale = nn.Parameter(scale.detach().unsqueeze(-1), requires_grad=scale.requires_grad)
    return net
