"""2D backbones from timm, any model by name: ``timm/<name>`` (``timm/convnext_small``, ``timm/vit_base_patch16_224``).

A record is made from timm's own metadata when the name is first asked for (:func:`resolve_timm`, registered as the
``timm/`` family): ``feature_info`` (channels and reduction of each scale), the classifier's input size,
``pretrained_cfg`` (first convolution, classifier, mean, std, input size, hub repository of the default tag) and
``group_matcher`` (the layer groups, merged into stem, at most four stages and head). The network is timm's own
module, so a ``torch.save(timm_model.state_dict())`` file loads with its keys unchanged; timm's
``checkpoint_filter_fn`` of the model's module adapts its tensors to the network's sizes (a ViT's position embedding
for another ``img_size``) and the load report says which it changed.

Features:

- pooled: ``forward_head(forward_features(x), pre_logits=True)``; the head is the classifier alone, so logits equal
  timm's ``forward``;
- scales of a hierarchical network (ResNet, ConvNeXt, TinyViT...): ``forward_intermediates`` at every
  ``feature_info`` entry, what timm's ``features_only`` gives;
- scales of a plain ViT, whose blocks all have the patch stride: ViTDet's simple feature pyramid (Li et al. 2022,
  without its output convolutions) on the last block's normalised patch tokens: deconvolutions to 4x and 2x, the
  map itself, a max pool to 1/2, i.e. reductions p/4, p/2, p, 2p for patch size p. Those layers are new
  (:class:`SimpleFeaturePyramid`, attached as ``feature_pyramid`` when multi-scale features are first needed), so
  a classifier never carries unused parameters. ViTs are built with ``dynamic_img_size=True``: any input that is a
  multiple of the patch size works, the position embedding resampled on the fly.

Size options go in the name and reach ``timm.create_model``: ``timm/vit_base_patch16_224[img_size=512]``,
``timm/convnext_small[drop_path_rate=0.1]``. ``weights: imagenet`` means timm's own default pretrained tag,
downloaded by timm from the Hugging Face hub.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from medtl.backbones.registry import (
    PYRAMID,
    ArchFamily,
    ArchSpec,
    Stage,
    channels_last_map,
    format_name,
    register_family,
    tokens_to_map,
)
from medtl.errors import UnknownOptionError, WeightsNotAvailableError

__all__ = ["TIMM_PREFIX", "SimpleFeaturePyramid", "resolve_timm", "timm_group_prefixes"]

TIMM_PREFIX = "timm/"

# arguments medtl sets itself (the record's in_channels and num_classes, and never a download while building)
_RESERVED = ("in_chans", "num_classes", "pretrained", "features_only", "checkpoint_path")

# groups between stem and head, at most: a handful, as the torchvision and MONAI records have
_MAX_STAGES = 4


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al., ECCV 2022) on one ViT feature map, without the output projections.

    From a map of ``dim`` channels at stride p: ``up4`` (two 2x2 transposed convolutions with LayerNorm and GELU
    between, ``dim/4`` channels, stride p/4), ``up2`` (one, ``dim/2`` channels, stride p/2), the map itself (stride
    p) and a 2x2 max pool (stride 2p): four scales that halve from one to the next, as a U-Net decoder needs.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            LayerNorm2d(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)
        self.down2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.channels = (dim // 4, dim // 2, dim, dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.up4(x), self.up2(x), x, self.down2(x)]


def _unknown_model(name: str) -> UnknownOptionError:
    import timm

    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
    return UnknownOptionError(
        f"unknown timm model {name!r} (architecture {TIMM_PREFIX + name!r}).{hint} List the names with "
        f"python -c \"import timm; print(timm.list_models('*{name.split('_')[0]}*'))\""
    )


def _create(name: str, kwargs: dict[str, Any], **medtl_args: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False, **kwargs, **medtl_args)
    except TypeError as exc:
        raise UnknownOptionError(
            f"timm model {name!r} does not take the size option(s) {kwargs} ({exc}); pass arguments of "
            f"timm.create_model({name!r}, ...)"
        ) from None


def timm_group_prefixes(net: nn.Module, groups: list[list[str]]) -> tuple[tuple[str, ...], ...]:
    """The shortest module paths covering each group of parameter names (every parameter under a path in the
    same group), so a record lists ``blocks.3`` rather than its 12 tensors."""
    owner = {name: i for i, names in enumerate(groups) for name in names}
    out: list[list[str]] = [[] for _ in groups]

    def visit(path: str, module: nn.Module) -> None:
        names = [n for n, _ in module.named_parameters(prefix=path)]
        if not names:
            return
        where = {owner[n] for n in names}
        if path and len(where) == 1:
            out[where.pop()].append(path)
            return
        for pname, _ in module.named_parameters(prefix=path, recurse=False):
            out[owner[pname]].append(pname)
        for cname, child in module.named_children():
            visit(f"{path}.{cname}" if path else cname, child)

    visit("", net)
    return tuple(tuple(p) for p in out)


def _groups(net: nn.Module, classifier: str, pyramid: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """stem, stage1..stageN (N <= 4, contiguous runs of timm's coarse groups), head (the classifier's group)."""
    names = [n for n, _ in net.named_parameters()]
    head = [n for n in names if n.startswith(classifier + ".")]
    try:
        from timm.models import group_parameters

        timm_groups = [list(g) for g in group_parameters(net, net.group_matcher(coarse=True)).values()]
    except (AttributeError, NotImplementedError):  # a model without a group matcher: first module, body, head
        first = names[0].split(".")[0]
        timm_groups = [[n for n in names if n.split(".")[0] == first]]
        timm_groups.append([n for n in names if n not in timm_groups[0] and n not in head])
        timm_groups.append(head)
    timm_groups = [g for g in timm_groups if g]
    # timm's last group holds the classifier (with the final norm of some heads, e.g. ConvNeXt's head.norm)
    head_group = timm_groups.pop() if timm_groups and set(head) & set(timm_groups[-1]) else list(head)
    stem = timm_groups.pop(0) if len(timm_groups) > 1 else []
    body = [[n for n in g if n not in head_group] for g in timm_groups]
    body = [g for g in body if g]
    n_stages = min(_MAX_STAGES, len(body))
    stages: list[list[str]] = [[] for _ in range(n_stages)]
    for i, g in enumerate(body):  # contiguous, as even as the groups allow
        stages[i * n_stages // len(body)] += g
    groups = [stem, *stages, head_group]
    covered = {n for g in groups for n in g}
    groups[-1] += [n for n in names if n not in covered]  # what no timm group named trains with the head
    prefixes = timm_group_prefixes(net, groups)
    named = [("stem", prefixes[0])] + [(f"stage{i + 1}", p) for i, p in enumerate(prefixes[1:-1])]
    named.append(("head", prefixes[-1] + ((PYRAMID,) if pyramid else ())))
    return tuple((n, p) for n, p in named if p or n in ("stem", "head"))


def _first_conv(net: nn.Module, cfg: dict[str, Any]) -> str:
    first = cfg.get("first_conv")
    if isinstance(first, (tuple, list)):
        first = first[0] if first else None
    if isinstance(first, str):
        try:
            if isinstance(net.get_submodule(first), nn.modules.conv._ConvNd):
                return first
        except AttributeError:
            pass
    for path, module in net.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return path
    raise UnknownOptionError(f"timm model {cfg.get('architecture')!r} has no convolution to adapt to other channels")


def _filter_fn(net: nn.Module) -> Any:
    fn = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    return fn if callable(fn) else None


def resolve_timm(name: str, options: dict[str, Any]) -> ArchSpec:
    """The record of ``timm/<name>`` with size options (keyword arguments of ``timm.create_model``).

    Raises:
        UnknownOptionError: timm has no model ``name`` (with the closest names), an option is not an argument of
            the model, or its classifier is not a linear layer.
    """
    import timm

    if not timm.is_model(name):
        raise _unknown_model(name)
    reserved = sorted(set(options) & set(_RESERVED))
    if reserved:
        raise UnknownOptionError(
            f"architecture {TIMM_PREFIX + name!r}: {', '.join(reserved)} cannot be a size option; medtl sets input "
            "channels, classes and weights itself (model.in_channels, the task's classes, model.weights)"
        )
    full = format_name(TIMM_PREFIX + name, options)
    with torch.device("meta"):
        probe = _create(name, options, in_chans=3, num_classes=1)
    cfg = dict(probe.pretrained_cfg or {})
    info = [dict(f) for f in probe.feature_info]
    reductions = [int(f["reduction"]) for f in info]
    flat = len(info) > 1 and len(set(reductions)) == 1  # a plain ViT: every block at the patch stride
    classifier = cfg.get("classifier")
    if classifier is None:  # a config that does not name it: find timm's get_classifier() in the module tree
        found = probe.get_classifier()
        classifier = next((path for path, m in probe.named_modules() if m is found and path), None)
    if not isinstance(classifier, str):
        raise UnknownOptionError(
            f"timm model {name!r} has no single classifier ({classifier}); medtl needs one linear classifier "
            "(choose a model without a distillation head)"
        )
    head_module = probe.get_submodule(classifier)
    if not isinstance(head_module, nn.Linear):
        raise UnknownOptionError(
            f"timm model {name!r} has a {type(head_module).__name__} classifier ({classifier}); medtl's heads are "
            "linear layers: choose another model"
        )
    kwargs = dict(options)
    if flat and "dynamic_img_size" in inspect.signature(type(probe).__init__).parameters:
        kwargs.setdefault("dynamic_img_size", True)

    def build(*, in_channels: int = 3, num_classes: int = 2) -> nn.Module:
        return _create(name, kwargs, in_chans=in_channels, num_classes=num_classes)

    def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net.forward_head(net.forward_features(x), pre_logits=True)

    def head(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
        # forward_head(pre_logits=True) applied the head's dropout already; the classifier is what remains
        return net.get_submodule(classifier)(f)

    def intermediates(net: nn.Module, x: torch.Tensor, **kw: Any) -> list[torch.Tensor]:
        if not hasattr(net, "forward_intermediates"):
            raise UnknownOptionError(
                f"timm model {name!r} has no forward_intermediates(), so medtl cannot take its feature maps; use it "
                "for classification, or choose another model as an encoder"
            )
        return net.forward_intermediates(x, intermediates_only=True, **kw)

    if flat:
        dim = int(info[-1]["num_chs"])
        patch = reductions[-1]

        def stage_forward(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
            (tokens,) = intermediates(net, x, indices=1, norm=True)
            yield from getattr(net, PYRAMID)(tokens)

        # saliency: the last block's first norm, whose patch tokens reach the class token through attention (after the
        # block, a class-token head takes no gradient from the patch tokens, so Grad-CAM there would be empty)
        last = str(info[-1]["module"])
        cam_target = f"{last}.norm1" if _has_module(probe, f"{last}.norm1") else last
        cam_map = tokens_to_map(int(getattr(probe, "num_prefix_tokens", 0) or 0), patch)
        stages = (
            Stage(f"{PYRAMID}.up4", ()),
            Stage(f"{PYRAMID}.up2", ()),
            Stage(str(info[-1]["module"]), ()),
            Stage(f"{PYRAMID}.down2", ()),
        )
        trace = 2 * patch * 8
        kind = f"plain ViT, patch {patch}; simple feature pyramid at 1/{patch / 4:g} to 1/{2 * patch}"
    else:
        n = len(info)

        def stage_forward(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
            yield from intermediates(net, x, indices=n)

        stages = tuple(Stage(str(f["module"]), ()) for f in info)
        cam_target = None  # the last feature_info module (ArchSpec.cam_layer)
        cam_map = channels_last_map if str(getattr(probe, "output_fmt", "NCHW")) == "NHWC" else None
        trace = max(reductions) * 8
        kind = f"scales at 1/{', 1/'.join(map(str, reductions))}"
    keep = ("architecture", "tag", "hf_hub_id", "url", "mean", "std", "input_size", "license", "num_classes")
    pretrained_cfg = {k: cfg.get(k) for k in keep}

    def load_pretrained() -> dict[str, torch.Tensor]:
        try:
            net = timm.create_model(name, pretrained=True, **options)
        except Exception as exc:  # offline hub, HTTP errors, a tag without weights: all mean "not available"
            where = cfg.get("hf_hub_id") or cfg.get("url") or "timm's hub"
            raise WeightsNotAvailableError(
                f"timm could not load the pretrained weights of {name!r} (tag {cfg.get('tag')!r}, {where}): "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}; run once "
                f"with network access (timm caches the file in the Hugging Face cache), or download the file "
                f"elsewhere and pass it as model.weights"
            ) from None
        return net.state_dict()

    filter_fn = _filter_fn(probe)
    return ArchSpec(
        name=full,
        family="timm",
        dims=2,
        inflatable=False,
        default_in_channels=3,
        num_features=int(head_module.in_features),
        build=build,
        features=features,
        head=head,
        stages=stages,
        classifier=classifier,
        first_conv=_first_conv(probe, cfg),
        groups=_groups(probe, classifier, flat),
        description=f"timm {name} ({kind})",
        stage_forward=stage_forward,
        state_fixup=None if filter_fn is None else (lambda state, net: filter_fn(state, net)),
        pyramid=(lambda net: SimpleFeaturePyramid(dim)) if flat else None,
        trace_size=trace,
        pretrained_cfg=pretrained_cfg,
        load_pretrained=load_pretrained if (cfg.get("hf_hub_id") or cfg.get("url")) else None,
        cam_target=cam_target,
        cam_map=cam_map,
    )


def _has_module(net: nn.Module, path: str) -> bool:
    try:
        net.get_submodule(path)
    except AttributeError:
        return False
    return True


register_family(
    ArchFamily(
        prefix=TIMM_PREFIX,
        resolve=resolve_timm,
        dims=(2,),
        default_in_channels=3,
        description="any timm model by name (timm.list_models()); ViTs get a simple feature pyramid for decoders",
        examples=(
            "timm/resnet50",
            "timm/convnext_small",
            "timm/tiny_vit_5m_224",
            "timm/vit_base_patch16_224",
            "timm/vit_small_patch14_dinov2",
        ),
        library_weights="imagenet",
    )
)
