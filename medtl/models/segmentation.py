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
        if len(set(first)) != 1 or not 1 <= first[0] <= 4:
            raise UnknownOptionError(
                f"{encoder.arch}: the U-Net decoder needs an isotropic first scale (reduction 1 to 4 on every "
                f"axis), but it is {list(first)}; choose another architecture"
            )
        # MONAI's decoder never concatenates its first feature map and ends with one more 2x up-block than it has
        # skips. From a first scale at 1/2 or coarser the input takes that first place (n scales, n up-blocks, the
        # output at first/2, upsampled by the head); a first scale at full size (SegResNet's) takes it itself
        # (n - 1 up-blocks back to full size).
        self.full_size_first = first[0] == 1
        n_blocks = len(info) - 1 if self.full_size_first else len(info)
        if len(decoder_channels) < n_blocks:
            raise UnknownOptionError(
                f"decoder_channels {list(decoder_channels)} has fewer entries than the {n_blocks} decoder blocks of "
                f"{encoder.arch}'s {len(info)} scales"
            )
        self.encoder = encoder
        self.arch = encoder.arch
        self.spatial_dims = encoder.spatial_dims
        self.in_channels = encoder.in_channels
        self.num_classes = num_classes
        self.weight_source = encoder.weight_source
        self.out_indices = list(range(len(info)))
        # the total reduction: inputs must be multiples of it
        self.stride = tuple(int(r) for r in reductions[-1])
        dec = list(decoder_channels[:n_blocks])
        channels = [f.channels for f in info]
        self.decoder = UNetDecoder(
            spatial_dims=encoder.spatial_dims,
            encoder_channels=channels if self.full_size_first else [encoder.in_channels, *channels],
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
        self.skip_connect = n_blocks - 1
        # the decoder ends at reduction first/2 (1 for ResNets and Swin, 2 for ConvNeXt's 4x stem, 1.75 for a ViT
        # with 14-pixel patches), or at full size from a full-size first scale
        self.head = SegmentationHead(
            spatial_dims=encoder.spatial_dims,
            in_channels=dec[-1],
            out_channels=num_classes,
            kernel_size=3,
            scale_factor=float(max(first[0] / 2, 1.0)),
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
        return self.head(self.decoder(feats if self.full_size_first else [x, *feats], self.skip_connect))

    def param_groups(self) -> list[ParamGroup]:
        """The encoder's groups (stem ... stage4) then ``head``: the decoder and segmentation head.

        What is left of the encoder's classification head (nothing for ResNets; ConvNeXt's final norm, unused
        here) joins its deepest stage, so fine_tune freezes the whole encoder and trains the decoder first. Layers
        medtl added to the encoder (a ViT's feature pyramid) train with the decoder, from the first epoch.
        """
        groups = [
            ParamGroup(g.name, list(g.params), [f"encoder.{n}" for n in g.param_names])
            for g in self.encoder.param_groups()
        ]
        new_layers = tuple(f"encoder.net.{p}" for p in self.encoder.spec.new_prefixes)
        head = ParamGroup("head")
        enc_head = groups.pop() if groups and groups[-1].name == "head" else None
        if enc_head is not None:
            for param, name in zip(enc_head.params, enc_head.param_names, strict=True):
                target = head if new_layers and name.startswith(new_layers) else groups[-1]
                target.params.append(param)
                target.param_names.append(name)
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
