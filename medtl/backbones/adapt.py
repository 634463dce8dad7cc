"""Adapting a network to the data: first convolution for other input channels, the classifier for other classes.

One helper, :func:`adapt_input_conv`, adapts pretrained first-convolution kernels of any dimensionality (2D
``(out, in, kh, kw)``, 3D ``(out, in, kx, ky, kz)``) to another number of input channels:

- one channel from several: the kernels are summed over the input channels, so a grey image gives the same
  response as that image repeated in every channel (what an RGB network sees on a grey photograph);
- more channels (or a different count): the kernels are repeated over the new channels and rescaled by
  ``old / new`` so the activation scale stays the same when every channel holds the same image.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["adapt_input_conv", "set_submodule", "replace_conv_in_channels"]


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> tuple[torch.Tensor, str]:
    """Adapt a convolution kernel ``(out, in, *kernel)`` to ``in_channels`` input channels.

    Returns:
        The new kernel (same dtype) and a sentence saying what was done.
    """
    old = weight.shape[1]
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == old:
        return weight, "unchanged"
    work = weight.float()
    if in_channels == 1:
        new = work.sum(dim=1, keepdim=True)
        how = f"summed {old} input channels into 1"
    else:
        reps = math.ceil(in_channels / old)
        new = work.repeat(1, reps, *([1] * (work.ndim - 2)))[:, :in_channels] * (old / in_channels)
        how = f"repeated {old} input channel(s) over {in_channels} and scaled by {old}/{in_channels}"
    return new.to(weight.dtype), how


def set_submodule(net: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    setattr(parent, name, module)


def replace_conv_in_channels(net: nn.Module, path: str, in_channels: int) -> None:
    """Swap the convolution at ``path`` for a freshly initialised one with ``in_channels`` inputs."""
    conv = net.get_submodule(path)
    if not isinstance(conv, nn.modules.conv._ConvNd):
        raise TypeError(f"{path} is a {type(conv).__name__}, not a convolution")
    if conv.in_channels == in_channels:
        return
    new = type(conv)(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    if new.weight.device.type != "meta":
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    set_submodule(net, path, new)
