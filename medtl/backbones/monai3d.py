"""3D encoders of MONAI's segmentation networks: SwinUNETR's Swin transformer and SegResNetDS's encoder.

The networks are MONAI's own modules with MONAI's own names, plus a linear classifier ``head`` for classification,
so published checkpoints map with prefix rules that :func:`medtl.models.load_into` already applies:

- ``swin_unetr_3d`` / ``swin_unetr_v2_3d``: ``SwinUNETR.swinViT`` (:class:`monai.networks.nets.swin_unetr.
  SwinTransformer`), feature size 48 as the self-supervised weights of Tang et al. 2022 (``model_swinvit.pt``);
  keys carry ``swinViT.`` in a SwinUNETR file and ``module.`` in the SSL file, whose MLP layers are named
  ``fc1``/``fc2`` where MONAI's are ``linear1``/``linear2`` (the renaming of ``SwinUNETR.load_from``, here
  :func:`swin_key_fixup`).
  Its five hidden states (patch embedding and four stages, each layer-normalised as SwinUNETR feeds its decoder)
  halve from 1/2 to 1/32 of the input; the pooled features are the mean of the deepest.
- ``segresnet_3d``: :class:`monai.networks.nets.segresnet_ds.SegResEncoder` as CT-FM's feature extractor (Pai et al.
  2025, ``project-lighter/ct_fm_feature_extractor``) configures it: 32 initial filters, blocks (1, 2, 2, 4, 4), batch
  norm; keys carry ``encoder.`` in a SegResNetDS file. Its levels run from full resolution to 1/16.

Size options go in the name (see :mod:`medtl.backbones.registry`): ``swin_unetr_3d[feature_size=24]``,
``segresnet_3d[init_filters=16,blocks_down=(1,2,2,4)]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from medtl.backbones.registry import ArchSpec, Stage, format_name, register_architecture
from medtl.errors import UnknownOptionError

__all__ = ["SWIN_DEFAULTS", "SEGRESNET_DEFAULTS", "swin_key_fixup"]

#: ``SwinTransformer`` arguments of ``swin_unetr_3d`` (those of ``SwinUNETR(feature_size=48)``).
SWIN_DEFAULTS: dict[str, Any] = {
    "feature_size": 48,
    "patch_size": 2,
    "window_size": 7,
    "depths": (2, 2, 2, 2),
    "num_heads": (3, 6, 12, 24),
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "dropout_path_rate": 0.0,
    "patch_norm": False,
    "use_checkpoint": False,
    "downsample": "merging",
    "normalize": True,
}

#: ``SegResEncoder`` arguments of ``segresnet_3d`` (CT-FM's ``config.json``; MONAI's defaults for the rest).
SEGRESNET_DEFAULTS: dict[str, Any] = {
    "init_filters": 32,
    "blocks_down": (1, 2, 2, 4, 4),
    "norm": "batch",
    "act": "relu",
}


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(2, x.ndim)))


def _linear_head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    return net.head(f)


def _checked(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UnknownOptionError(
            f"architecture {name!r} has no size option {', '.join(unknown)}; it takes: {', '.join(sorted(defaults))}"
        )
    return defaults | options


def _build_outside_meta(make: Any) -> nn.Module:
    """Build with real tensors even under ``torch.device("meta")``: MONAI's Swin calls ``.item()`` while it is
    built (drop-path rates), which meta tensors refuse. The result goes to the meta device afterwards."""
    on_meta = torch.get_default_device().type == "meta"
    if not on_meta:
        return make()
    with torch.device("cpu"):
        net = make()
    return net.to("meta")


# --- Swin (SwinUNETR's encoder) ---------------------------------------------------------------------------------


def swin_key_fixup(key: str) -> str:
    """Names of the SSL Swin file (``mlp.fc1``, ``mlp.fc2``) as MONAI's MLP block has them (``linear1``/``2``)."""
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def _swin_builder(kw: dict[str, Any], use_v2: bool):
    def build(*, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer
        from monai.utils import ensure_tuple_rep, look_up_option

        def make() -> nn.Module:
            net = SwinTransformer(
                in_chans=in_channels,
                embed_dim=kw["feature_size"],
                window_size=ensure_tuple_rep(kw["window_size"], 3),
                patch_size=ensure_tuple_rep(kw["patch_size"], 3),
                depths=kw["depths"],
                num_heads=kw["num_heads"],
                mlp_ratio=kw["mlp_ratio"],
                qkv_bias=kw["qkv_bias"],
                drop_rate=kw["drop_rate"],
                attn_drop_rate=kw["attn_drop_rate"],
                drop_path_rate=kw["dropout_path_rate"],
                norm_layer=nn.LayerNorm,
                patch_norm=kw["patch_norm"],
                use_checkpoint=kw["use_checkpoint"],
                spatial_dims=3,
                downsample=look_up_option(kw["downsample"], MERGING_MODE),
                use_v2=use_v2,
            )
            # the deepest hidden state comes after the last stage's patch merging: 16 x feature_size channels
            # (SwinTransformer.num_features says 8 x, the input of that merging)
            net.add_module("head", nn.Linear(kw["feature_size"] * 2 ** len(kw["depths"]), num_classes))
            return net

        return _build_outside_meta(make)

    return build


def _swin_spec(name: str, options: dict[str, Any], use_v2: bool) -> ArchSpec:
    kw = _checked(name, options, SWIN_DEFAULTS)
    depths = tuple(kw["depths"])
    if len(depths) != 4 or len(tuple(kw["num_heads"])) != 4:
        raise UnknownOptionError(
            f"architecture {name!r}: MONAI's Swin has 4 stages, so depths and num_heads need 4 values each (got "
            f"depths={depths}, num_heads={tuple(kw['num_heads'])})"
        )
    normalize = bool(kw["normalize"])

    def hidden_states(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield from net(x, normalize)

    def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _pool(net(x, normalize)[-1])

    groups: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("stem", ("patch_embed",)),
        *((f"stage{i}", (f"layers{i}", *((f"layers{i}c",) if use_v2 else ()))) for i in range(1, 5)),
        ("head", ("head",)),
    )
    variant = "SwinUNETR-v2" if use_v2 else "SwinUNETR"
    return ArchSpec(
        name=format_name(name, options),
        family="monai-swin",
        dims=3,
        inflatable=False,
        default_in_channels=1,
        num_features=int(kw["feature_size"]) * 2 ** len(depths),
        build=_swin_builder(kw, use_v2),
        features=features,
        head=_linear_head,
        stages=(Stage("patch_embed", ()), *(Stage(f"layers{i}", ()) for i in range(1, 5))),
        classifier="head",
        first_conv="patch_embed.proj",
        groups=groups,
        key_fixup=swin_key_fixup,
        description=f"Swin encoder of MONAI {variant} (feature size {kw['feature_size']}; hidden states 1/2 to 1/32)",
        stage_forward=hidden_states,
        cam_target="layers4.0",  # the last stage's BasicLayer (``layers4`` is the ModuleList that holds it)
        # 5 halvings of the patch size: a multiple of the total stride (64 for the default patch of 2)
        trace_size=_isotropic(kw["patch_size"]) * 2**4 * 8,
        variant=lambda more: _swin_spec(name, options | more, use_v2),
    )


def _isotropic(value: Any) -> int:
    """A patch size given as an int or a tuple of equal ints."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise UnknownOptionError(f"anisotropic patch sizes ({tuple(value)}) are not supported; give one integer")
        return int(value[0])
    return int(value)


# --- SegResNetDS encoder -------------------------------------------------------------------------------------------


def _segresnet_builder(kw: dict[str, Any]):
    def build(*, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
        from monai.networks.nets.segresnet_ds import SegResEncoder

        net = SegResEncoder(
            spatial_dims=3,
            init_filters=kw["init_filters"],
            in_channels=in_channels,
            act=kw["act"],
            norm=kw["norm"],
            blocks_down=tuple(kw["blocks_down"]),
        )
        net.add_module("head", nn.Linear(kw["init_filters"] * 2 ** (len(kw["blocks_down"]) - 1), num_classes))
        return net

    return build


def _segresnet_spec(name: str, options: dict[str, Any]) -> ArchSpec:
    kw = _checked(name, options, SEGRESNET_DEFAULTS)
    n = len(tuple(kw["blocks_down"]))
    if n < 2:
        raise UnknownOptionError(f"architecture {name!r}: blocks_down needs at least 2 levels, got {kw['blocks_down']}")
    # level i: the previous level's strided convolution (none for the first: the initial convolution), then blocks
    stages = tuple(
        Stage(f"layers.{i}", ("conv_init" if i == 0 else f"layers.{i - 1}.downsample", f"layers.{i}.blocks"))
        for i in range(n)
    )

    def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _pool(net(x)[-1])

    return ArchSpec(
        name=format_name(name, options),
        family="monai-segresnet",
        dims=3,
        inflatable=False,
        default_in_channels=1,
        num_features=int(kw["init_filters"]) * 2 ** (n - 1),
        build=_segresnet_builder(kw),
        features=features,
        head=_linear_head,
        stages=stages,
        classifier="head",
        first_conv="conv_init",
        groups=(
            ("stem", ("conv_init",)),
            *((f"stage{i + 1}", (f"layers.{i}",)) for i in range(n)),
            ("head", ("head",)),
        ),
        description=f"encoder of MONAI SegResNetDS as CT-FM's (init filters {kw['init_filters']}, blocks "
        f"{tuple(kw['blocks_down'])}; levels 1 to 1/{2 ** (n - 1)})",
        trace_size=2 ** (n - 1) * 16,
        variant=lambda more: _segresnet_spec(name, options | more),
    )


register_architecture(_swin_spec("swin_unetr_3d", {}, use_v2=False))
register_architecture(_swin_spec("swin_unetr_v2_3d", {}, use_v2=True))
register_architecture(_segresnet_spec("segresnet_3d", {}))
