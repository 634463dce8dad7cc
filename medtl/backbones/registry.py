"""The architecture registry: each architecture is a record with a builder, its scales and its layer groups.

A record (:class:`ArchSpec`) says how to build the network, how to get pooled features and logits from it, which
modules lead to each scale of its feature pyramid (for encoders), where its first convolution and classifier are
(for channel adaptation and the head), and how its layers group from stem to head (for freezing and per-group
learning rates). Families register their records on import: :mod:`medtl.backbones.torchvision2d` (2D ImageNet
CNNs), :mod:`medtl.backbones.medicalnet3d` (3D ResNets) and :mod:`medtl.backbones.monai3d` (the encoders of MONAI's
SwinUNETR and SegResNetDS). A family too large to list registers a resolver for a name prefix instead:
:mod:`medtl.backbones.timm2d` makes the record of ``timm/<any timm model>`` when it is first asked for. Weights are not
known here: :mod:`medtl.models` joins an architecture and a weight source.

Size options travel in the name, so a run folder, a ``local:`` weight record or a compare arm that stores the name
rebuilds the same network: ``swin_unetr_3d[feature_size=24]``, ``timm/vit_base_patch16_224[img_size=512]``
(``name[key=value,...]``, values as Python literals; the record turns them into builder arguments).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medtl.errors import UnknownOptionError
from medtl.utils import look_up_option

__all__ = [
    "ArchSpec",
    "ArchFamily",
    "Stage",
    "run_stages",
    "register_architecture",
    "register_family",
    "get_architecture",
    "list_architectures",
    "list_families",
    "split_options",
    "format_name",
    "tokens_to_map",
    "channels_last_map",
]

_FAMILIES = (
    "medtl.backbones.torchvision2d",
    "medtl.backbones.medicalnet3d",
    "medtl.backbones.monai3d",
    "medtl.backbones.timm2d",
    "medtl.backbones.tinyvit_sam",
)


@dataclass(frozen=True)
class Stage:
    """One scale of an encoder's feature pyramid.

    Attributes:
        name: the scale's name (``"stem"``, ``"layer1"``...).
        modules: dotted paths of the modules that lead from the previous scale's output to this one, run in order.
    """

    name: str
    modules: tuple[str, ...]


def run_stages(
    net: nn.Module,
    stages: tuple[Stage, ...],
    x: torch.Tensor,
    stage_forward: Callable[[nn.Module, torch.Tensor], Iterator[torch.Tensor]] | None = None,
) -> Iterator[torch.Tensor]:
    """Feature maps of ``net`` at each scale in turn; stop iterating to skip the deeper layers.

    ``stage_forward`` (a record's :attr:`ArchSpec.stage_forward`) replaces the module paths of ``stages`` for
    networks whose scales are not a chain of modules (a ViT's tokens, MONAI's Swin hidden states).
    """
    if stage_forward is not None:
        yield from stage_forward(net, x)
        return
    for stage in stages:
        for path in stage.modules:
            x = net.get_submodule(path)(x)
        yield x


@dataclass(frozen=True)
class ArchSpec:
    """An architecture.

    Attributes:
        name: registry name (``"resnet18"``, ``"resnet50_3d"``...).
        family: ``"torchvision"`` or ``"monai-resnet"``.
        dims: spatial dims of the network as built (2 or 3).
        inflatable: whether the 2D network can be inflated to 3D (I3D).
        default_in_channels: input channels when neither the caller nor the weights say otherwise.
        num_features: size of the pooled features fed to the classifier.
        build: ``build(in_channels=..., num_classes=...)`` returns the network (random weights).
        features: ``features(net, x)`` returns pooled features ``(B, num_features)``, for 2D or inflated 3D nets.
        head: ``head(net, features)`` returns logits (dropout included where the network has it).
        stages: the scales of the feature pyramid, from the stem down (see :func:`run_stages`).
        classifier: dotted path of the final ``nn.Linear``.
        first_conv: dotted path of the first convolution.
        groups: ``(group name, module path prefixes)`` from stem to head; every parameter is in exactly one.
        key_fixup: renames legacy checkpoint keys before matching (or ``None``).
        tensor_fixup: ``tensor_fixup(key, tensor)`` converts checkpoint tensors to this network's layout (or
            ``None``), e.g. kernels trained on ``(D, H, W)`` volumes for medtl's ``(X, Y, Z)``.
        description: one line for listings.
        stage_forward: ``stage_forward(net, x)`` yields the feature map of each scale of :attr:`stages`, for
            networks whose scales are not a chain of modules (``None``: run the stages' module paths).
        state_fixup: ``state_fixup(state, net)`` adapts a checkpoint's tensors (its keys already the network's) to
            this network's sizes, e.g. timm's ``checkpoint_filter_fn`` resampling a ViT's position embedding for
            another input size (or ``None``). Tensors whose shape it changes are reported as adapted.
        pyramid: ``pyramid(net)`` builds the layers that turn the network's output into :attr:`stages` (a ViT's
            simple feature pyramid), or ``None``. They are attached to the network as :data:`PYRAMID` when
            multi-scale features are first needed; no checkpoint of the network's own library holds them, so
            loading leaves them random (and says so) unless the file has them.
        trace_size: input size per axis at which feature shapes are traced on the meta device: a multiple of the
            network's total stride (and of its patch size).
        variant: ``variant(options)`` returns the record of this architecture with size options (the name's
            ``[key=value,...]``), or ``None`` when it takes none.
        pretrained_cfg: what the network's own library says of its default pretrained weights (timm's
            ``pretrained_cfg``: tag, hub repository, mean, std, input size, licence), or ``None``.
        load_pretrained: returns the state dict of those weights, downloaded by the library itself (or ``None``).
        cam_target: dotted path of the module whose output saliency maps read (Grad-CAM's target layer), where the
            default of :attr:`cam_layer` is not the right one (``None``: that default).
        cam_map: ``cam_map(output, spatial_size)`` turns that module's output into a ``(B, C, *spatial)`` map when it
            is not one (a ViT's tokens, a channels-last stage), given the network input's spatial size; ``None``: the
            output is already channels-first.
    """

    name: str
    family: str
    dims: int
    inflatable: bool
    default_in_channels: int
    num_features: int
    build: Callable[..., nn.Module]
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    stages: tuple[Stage, ...]
    classifier: str
    first_conv: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    key_fixup: Callable[[str], str] | None = None
    tensor_fixup: Callable[[str, torch.Tensor], torch.Tensor] | None = None
    description: str = ""
    stage_forward: Callable[[nn.Module, torch.Tensor], Iterator[torch.Tensor]] | None = None
    state_fixup: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None
    pyramid: Callable[[nn.Module], nn.Module] | None = None
    trace_size: int = 256
    variant: Callable[[dict[str, Any]], ArchSpec] | None = None
    pretrained_cfg: Mapping[str, Any] | None = field(default=None, compare=False)
    load_pretrained: Callable[[], dict[str, torch.Tensor]] | None = None
    cam_target: str | None = None
    cam_map: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor] | None = None

    @property
    def cam_layer(self) -> str:
        """Dotted path (in the network) of the module whose output saliency maps are made from: Grad-CAM's target
        layer, the deepest stage, where the features are most semantic and still spatial. It is :attr:`cam_target`
        when the record sets one, else the last module of the last stage (the stage's own name for a family whose
        stages come from :attr:`stage_forward`, e.g. timm's ``feature_info`` module ``layer4`` or ``stages.3``)."""
        if self.cam_target:
            return self.cam_target
        last = self.stages[-1]
        return last.modules[-1] if last.modules else last.name

    @property
    def head_prefixes(self) -> tuple[str, ...]:
        return (self.classifier + ".",)

    @property
    def new_prefixes(self) -> tuple[str, ...]:
        """Key prefixes of the layers medtl adds to the network (its feature pyramid): random unless a file has
        them."""
        return (PYRAMID + ".",) if self.pyramid is not None else ()

    def attach_pyramid(self, net: nn.Module) -> bool:
        """Give ``net`` its feature pyramid (see :attr:`pyramid`) on the device and dtype of its parameters, once.

        Returns:
            Whether a pyramid was added now.
        """
        if self.pyramid is None or hasattr(net, PYRAMID):
            return False
        like = next(net.parameters())
        module = self.pyramid(net)
        if like.device.type == "meta":
            module = module.to("meta")
        else:
            module = module.to(device=like.device, dtype=like.dtype)
        net.add_module(PYRAMID, module)
        return True

    @property
    def first_conv_key(self) -> str:
        return self.first_conv + ".weight"

    @property
    def supported_dims(self) -> tuple[int, ...]:
        return (2, 3) if self.inflatable else (self.dims,)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "dims": list(self.supported_dims),
            "default_in_channels": self.default_in_channels,
            "num_features": self.num_features,
            "stages": [s.name for s in self.stages],
            "description": self.description,
        }


def tokens_to_map(prefix_tokens: int, patch: int) -> Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]:
    """An :attr:`ArchSpec.cam_map` for a ViT layer whose output is tokens ``(B, N, C)``: the first ``prefix_tokens``
    (class and register tokens) dropped, the patch tokens laid out on the ``(H / patch, W / patch)`` grid of the
    input as ``(B, C, H / patch, W / patch)``."""

    def to_map(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        grid = [int(s) // patch for s in size]
        b, n, c = x.shape
        if n - prefix_tokens != grid[0] * grid[1]:
            raise ValueError(
                f"{n} tokens with {prefix_tokens} prefix token(s) do not fill the {grid[0]}x{grid[1]} patch grid of "
                f"a {tuple(size)} input"
            )
        return x[:, prefix_tokens:].reshape(b, *grid, c).permute(0, 3, 1, 2)

    return to_map


def channels_last_map(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """An :attr:`ArchSpec.cam_map` for a stage whose output is channels-last ``(B, *spatial, C)`` (timm's Swin)."""
    return x.movedim(-1, 1)


#: Attribute under which a record's :attr:`ArchSpec.pyramid` is attached to its network (and its key prefix).
PYRAMID = "feature_pyramid"


@dataclass(frozen=True)
class ArchFamily:
    """Architectures made on demand from a name prefix (``timm/<name>``), too many to register one by one.

    Attributes:
        prefix: the name prefix, e.g. ``"timm/"``.
        resolve: ``resolve(name, options)`` returns the record of ``prefix + name`` with size options (see
            :func:`split_options`); it raises :class:`UnknownOptionError` for names the library does not know.
        dims: spatial dims of its networks.
        default_in_channels: input channels of its networks by default.
        description: one line for listings.
        examples: a few names, for listings and messages.
        library_weights: the weight-source name that means the library's own pretrained weights (``"imagenet"``
            for timm's default tag), or ``None``.
    """

    prefix: str
    resolve: Callable[[str, dict[str, Any]], ArchSpec]
    dims: tuple[int, ...]
    default_in_channels: int
    description: str
    examples: tuple[str, ...] = ()
    library_weights: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": f"{self.prefix}<any {self.prefix.rstrip('/')} model name>",
            "family": self.prefix.rstrip("/"),
            "dims": list(self.dims),
            "default_in_channels": self.default_in_channels,
            "num_features": None,
            "stages": [],
            "description": self.description,
            "examples": list(self.examples),
        }


_REGISTRY: dict[str, ArchSpec] = {}
_RESOLVED: dict[str, ArchSpec] = {}
_FAMILY_RESOLVERS: dict[str, ArchFamily] = {}
_loaded = False


def register_architecture(spec: ArchSpec) -> ArchSpec:
    """Add ``spec`` to the registry (a later record with the same name replaces the earlier one)."""
    _REGISTRY[spec.name] = spec
    _RESOLVED.clear()
    return spec


def register_family(family: ArchFamily) -> ArchFamily:
    """Add a family of architectures resolved from a name prefix (see :class:`ArchFamily`)."""
    _FAMILY_RESOLVERS[family.prefix] = family
    _RESOLVED.clear()
    return family


def _split_top(text: str) -> list[str]:
    """Split ``text`` at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_value(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: norm=instance
    return tuple(value) if isinstance(value, list) else value


def split_options(name: str) -> tuple[str, dict[str, Any]]:
    """``"swin_unetr_3d[feature_size=24,depths=(2,2,2,2)]"`` -> ``("swin_unetr_3d", {"feature_size": 24, ...})``.

    Raises:
        UnknownOptionError: the brackets do not hold ``key=value`` pairs.
    """
    name = name.strip()
    if not name.endswith("]") or "[" not in name:
        return name, {}
    base, _, inner = name[:-1].partition("[")
    options: dict[str, Any] = {}
    for part in _split_top(inner):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UnknownOptionError(
                f"architecture {name!r}: size options are written name[key=value,...], e.g. "
                f"swin_unetr_3d[feature_size=24]; got {part!r}"
            )
        options[key] = _parse_value(value.strip())
    return base.strip(), options


def _format_value(value: Any, inner: bool = False) -> str:
    if isinstance(value, (tuple, list)):
        items = ",".join(_format_value(v, True) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, str):
        return repr(value) if inner else value
    return repr(value)


def format_name(base: str, options: Mapping[str, Any]) -> str:
    """The canonical name of ``base`` with ``options`` (sorted keys): what :attr:`ArchSpec.name` holds."""
    if not options:
        return base
    return base + "[" + ",".join(f"{k}={_format_value(options[k])}" for k in sorted(options)) + "]"


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _FAMILIES:
            importlib.import_module(module)


def list_architectures() -> list[str]:
    """Names of the registered architectures (the families of :func:`list_families` are not enumerated)."""
    _ensure_loaded()
    return list(_REGISTRY)


def list_families() -> list[ArchFamily]:
    """The families resolved from a name prefix (``timm/``)."""
    _ensure_loaded()
    return list(_FAMILY_RESOLVERS.values())


def get_architecture(name: str) -> ArchSpec:
    """The record of architecture ``name``: a registered name, ``<prefix><name>`` of a family (``timm/resnet50``),
    either with size options (``swin_unetr_3d[feature_size=24]``). Records made on demand are cached.

    Raises:
        UnknownOptionError: ``name`` is not registered (with the closest name), the family's library does not know
            it, or an option is not one the architecture takes.
    """
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _RESOLVED:
        return _RESOLVED[name]
    base, options = split_options(name)
    canonical = format_name(base, options)
    if canonical in _RESOLVED:
        spec = _RESOLVED[canonical]
    else:
        family = next((f for p, f in _FAMILY_RESOLVERS.items() if base.startswith(p)), None)
        if family is not None:
            spec = family.resolve(base[len(family.prefix) :], options)
        else:
            allowed = list(_REGISTRY) + [f.prefix + "<name>" for f in _FAMILY_RESOLVERS.values()]
            spec = _REGISTRY[look_up_option(base, allowed, what="architecture")]
            if options:
                if spec.variant is None:
                    raise UnknownOptionError(
                        f"architecture {base!r} takes no size options (got {name!r}); use {base!r}"
                    )
                spec = spec.variant(options)
        _RESOLVED[canonical] = spec
    _RESOLVED[name] = spec
    return spec
