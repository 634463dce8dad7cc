"""The pretraining methods: SimCLR on lightly, and a Models Genesis restoration decoder.

- SimCLR (Chen et al. 2020): the encoder's pooled features go through lightly's ``SimCLRProjectionHead``; two
  views of each scan are pulled together and pushed away from every other view with lightly's ``NTXentLoss``,
  which gathers the projections of every DDP rank (``gather_distributed=True``) so that the negatives are the
  global batch.
- Models Genesis (Zhou et al. 2019): a light U-Net-like decoder restores the uncorrupted scan from the encoder's
  stage outputs; the loss is the mean squared error. Only the encoder is kept.

The decoder reads the encoder's feature pyramid (``forward_features(x, out_indices=...)``, channels from
``feature_info``), so every registered 2D or 3D architecture works without per-model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medtl.errors import ConfigError

__all__ = ["GenesisDecoder", "simclr_parts"]


class GenesisDecoder(nn.Module):
    """A light U-Net-like decoder: lateral 1x1 convolutions, upsampling, one conv block per stage.

    Args:
        channels: channels of the stage outputs, shallow to deep.
        out_channels: channels of the restored image.
        spatial_dims: 2 or 3.
        width: channels of every decoder stage.
    """

    def __init__(self, channels: Sequence[int], out_channels: int, spatial_dims: int, width: int = 32) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution

        self.spatial_dims = spatial_dims
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d

        def block(cin: int) -> nn.Module:
            return Convolution(spatial_dims, cin, width, kernel_size=3, norm="batch", act="relu")

        self.lateral = nn.ModuleList(conv(c, width, kernel_size=1) for c in channels)
        self.top = block(width)
        self.merge = nn.ModuleList(block(2 * width) for _ in channels[:-1])
        self.out = nn.Sequential(block(width), conv(width, out_channels, kernel_size=1))

    def _up(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(x.shape[2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode="bilinear" if self.spatial_dims == 2 else "trilinear")

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """The restored image of spatial ``size`` from the stage outputs (shallow to deep)."""
        x = self.top(self.lateral[-1](features[-1]))
        for i in reversed(range(len(features) - 1)):
            x = self._up(x, features[i].shape[2:])
            x = self.merge[i](torch.cat([x, self.lateral[i](features[i])], dim=1))
        return self.out(self._up(x, size))


def simclr_parts(
    num_features: int, hidden_dim: int | None, output_dim: int, temperature: float
) -> tuple[nn.Module, Any]:
    """lightly's SimCLR projection head and NT-Xent loss (gathered across DDP ranks).

    Raises:
        ConfigError: lightly is not installed (the message names the extra).
    """
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
    except ImportError as exc:
        raise ConfigError(
            f"method simclr needs the lightly package ({exc})", fix="pip install 'medtl[pretrain]'"
        ) from None
    head = SimCLRProjectionHead(input_dim=num_features, hidden_dim=hidden_dim or num_features, output_dim=output_dim)
    return head, NTXentLoss(temperature=temperature, gather_distributed=True)
