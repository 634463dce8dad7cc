"""``SegmentationModel``: a medtl encoder (any registered architecture, any weight source) and MONAI's U-Net decoder.

The encoder is a headless :class:`~medtl.models.MedtlModel` built by :func:`medtl.models.create_model`, so its
weights load through medtl's own sources, checks and load report; the decoder is MONAI's maintained
``UNetDecoder`` + ``SegmentationHead`` (the pair ``FlexibleUNet`` uses), fed with the encoder's multi-scale maps
(``forward_features(x, out_indices=...)``) and the input as in ``FlexibleUNet``. The decoder starts random and the
load report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medtl.errors import UnknownOptionError
from medtl.models.model import MedtlModel, ParamGroup

__all__ = ["SegmentationModel", "DEFAULT_DECODER_CHANNELS"]

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class SegmentationModel(nn.Module):
    """Encoder-decoder segmentation network: logits ``(B, num_classes, *spatial)`` at the input's size.

    Args:
        encoder: a headless medtl model (``num_classes=0``).
        num_classes: output channels (the background included).
        decoder_channels: channels of the decoder blocks, deepest first; the first ``n_scales`` are used.

    Raises:
        UnknownOptionError: the encoder's scales do not halve in size from one to the next on every axis (the
            U-Net decoder upsamples by 2 per block), e.g. an anisotropic stem.
    """

    def __init__(
        self, encoder: MedtlModel, num_classes: int, decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS
    ) -> None:
        from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder

        super().__init__()
        if num_classes < 1:
            raise UnknownOptionError(f"a segmentation model needs num_classes >= 1 (got {num_classes})")
        info = encoder.feature_info
        reductions = [f.reduction for f in info]
        for a, b in zip(reductions, reductions[1:], strict=False):
            if any(rb != 2 * ra for ra, rb in zip(a, b, strict=True)):
                raise UnknownOptionError(
                    f"{encoder.arch}: the U-Net decoder needs encoder scales that halve in size on every axis, but "
                    f"the reductions are {[list(r) for r in reductions]}; choose another architecture"
                )
        first = reductions[0]
        if len(set(first)) != 1 or first[0] not in (1, 2, 4):
            raise UnknownOptionError(
                f"{encoder.arch}: the U-Net decoder needs an isotropic first scale (reduction 1, 2 or 4 on every "
                f"axis), but it is {list(first)}; choose another architecture"
            )
        if len(decoder_channels) < len(info):
            raise UnknownOptionError(
                f"decoder_channels {list(decoder_channels)} has fewer entries than the encoder's {len(info)} scales"
            )
        self.encoder = encoder
        self.arch = encoder.arch
        self.spatial_dims = encoder.spatial_dims
        self.in_channels = encoder.in_channels
        self.num_classes = num_classes
        self.weight_source = encoder.weight_source
        self.out_indices = list(range(len(info)))
        # the total reduction: inputs must be multiples of it
        self.stride = tuple(r for r in reductions[-1])
        dec = list(decoder_channels[: len(info)])
        # as FlexibleUNet: the input is features[0] (never a skip); n scales -> n up-blocks, the last without a skip
        self.decoder = UNetDecoder(
            spatial_dims=encoder.spatial_dims,
            encoder_channels=[encoder.in_channels, *(f.channels for f in info)],
            decoder_channels=dec,
            act=("relu", {"inplace": True}),
            norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.skip_connect = len(info) - 1
        # after n up-blocks the map is at reduction first/2 (1 for ResNets, 2 for ConvNeXt's 4x stem)
        self.head = SegmentationHead(
            spatial_dims=encoder.spatial_dims,
            in_channels=dec[-1],
            out_channels=num_classes,
            kernel_size=3,
            scale_factor=float(max(first[0] // 2, 1)),
        )
        self.load_report = encoder.load_report
        decoder_keys = [f"decoder.{k}" for k in self.decoder.state_dict()] + [
            f"head.{k}" for k in self.head.state_dict()
        ]
        self.load_report.notes.append(
            f"segmentation: U-Net decoder and head new (random): {len(decoder_keys)} tensors; the encoder's as loaded"
        )
        self.decoder_keys = decoder_keys

    @property
    def feature_info(self):  # noqa: ANN201 - the encoder's FeatureInfo list
        return self.encoder.feature_info

    def forward_features(self, x: torch.Tensor, out_indices: Sequence[int] | None = None):  # noqa: ANN201
        """The encoder's features (see :meth:`MedtlModel.forward_features`)."""
        return self.encoder.forward_features(x, out_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = [int(n) for n, s in zip(x.shape[2:], self.stride, strict=False) if int(n) % s]
        if x.ndim == self.spatial_dims + 2 and bad:
            raise ValueError(
                f"{self.arch} segmentation input of spatial size {tuple(x.shape[2:])} must be a multiple of "
                f"{self.stride} on every axis; set segmentation.patch_size (or preprocess.size) to multiples"
            )
        feats = self.encoder.forward_features(x, self.out_indices)
        return self.head(self.decoder([x, *feats], self.skip_connect))

    def param_groups(self) -> list[ParamGroup]:
        """The encoder's groups (stem ... stage4) then ``head``: the decoder and segmentation head.

        What is left of the encoder's classification head (nothing for ResNets; ConvNeXt's final norm, unused
        here) joins its deepest stage, so fine_tune freezes the whole encoder and trains the decoder first.
        """
        groups = [
            ParamGroup(g.name, list(g.params), [f"encoder.{n}" for n in g.param_names])
            for g in self.encoder.param_groups()
        ]
        enc_head = groups.pop() if groups and groups[-1].name == "head" else None
        if enc_head is not None and enc_head.params:
            groups[-1].params += enc_head.params
            groups[-1].param_names += enc_head.param_names
        head = ParamGroup("head")
        for prefix, module in (("decoder", self.decoder), ("head", self.head)):
            for name, p in module.named_parameters():
                head.params.append(p)
                head.param_names.append(f"{prefix}.{name}")
        return [*groups, head]

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_classes={self.num_classes}, weights={self.weight_source.name!r}"
        )
