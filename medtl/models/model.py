"""``MedtlModel``: one network with a uniform surface (logits, pooled or multi-scale features, head, layer groups)
over every registered architecture, and the weights it started from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import nn

from medtl.backbones.adapt import set_submodule
from medtl.backbones.registry import PYRAMID, ArchSpec, get_architecture, run_stages
from medtl.models.load import LoadReport
from medtl.weights.sources import WeightSource

__all__ = ["MedtlModel", "ParamGroup", "FeatureInfo"]

# Feature shapes are traced on the meta device at the record's ``trace_size`` per axis (a multiple of the network's
# total stride and patch size, so each reduction comes out exact). Meta tensors hold no data: the size costs nothing.


@dataclass
class ParamGroup:
    """Parameters of one layer group (``stem``, ``stage1``... ``head``), for freezing and per-group rates.

    Attributes:
        name: group name.
        params: the parameters, in model order.
        param_names: their names in ``model.named_parameters()``.
    """

    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.params)


@dataclass(frozen=True)
class FeatureInfo:
    """One scale of a model's feature pyramid (what ``forward_features(x, out_indices=[index])`` returns).

    Attributes:
        index: position in :attr:`MedtlModel.feature_info`, shallowest first.
        name: the scale's name in the architecture record (``"stem"``, ``"layer1"``, ``"features.3"``...).
        channels: channels of the feature map.
        reduction: input size divided by the feature map's size, per spatial axis (``(8, 8)`` in 2D; an
            anisotropic stem such as the CT I3ResNet's gives e.g. ``(8, 8, 4)``). An integer, except where a patch
            size makes it a fraction: a ViT with 14-pixel patches has a pyramid scale at 3.5.
    """

    index: int
    name: str
    channels: int
    reduction: tuple[int | float, ...]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "channels": self.channels, "reduction": list(self.reduction)}


class _StageRunner(nn.Module):
    """Runs every stage of ``net``; used to trace feature shapes with ``torch.func.functional_call``."""

    def __init__(self, net: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(run_stages(self.net, self.spec.stages, x, self.spec.stage_forward))


def _ratio(size: int, n: int) -> int | float:
    return size // n if size % n == 0 else size / n


class MedtlModel(nn.Module):
    """A classification network (or, with ``num_classes=0``, a headless encoder) over any registered architecture.

    The wrapped network (``self.net``) keeps its native module names, so its checkpoints stay compatible with
    torchvision, MONAI and MedicalNet.

    Attributes:
        net: the wrapped network.
        arch: architecture name.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output classes; 0 for a headless model whose ``forward`` returns pooled features.
        weight_source: where the initial weights came from.
        load_report: what loading those weights did.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        weight_source: WeightSource,
        load_report: LoadReport,
    ) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.weight_source = weight_source
        self.load_report = load_report
        self._feature_info: list[FeatureInfo] | None = None

    @property
    def spec(self) -> ArchSpec:
        return get_architecture(self.arch)

    @property
    def num_features(self) -> int:
        """Size of the pooled features (the classifier's input)."""
        return self.spec.num_features

    def ensure_pyramid(self) -> bool:
        """Attach the architecture's feature pyramid (a ViT's, see :attr:`ArchSpec.pyramid`) if it has one and the
        network does not yet: multi-scale features need it, pooled features do not (a classifier carries no unused
        layers). :attr:`feature_info` and ``forward_features(x, out_indices=...)`` call it, so ask for
        :attr:`feature_info` before building an optimizer over a model that will use multi-scale features.

        Returns:
            Whether layers were added now (new, random).
        """
        added = self.spec.attach_pyramid(self.net)
        if added:
            self.load_report.left_random.extend(
                k for k in self.net.state_dict() if k.startswith(self.spec.new_prefixes)
            )
            self.load_report.notes.append(f"feature pyramid for multi-scale features new (random): {PYRAMID}")
        return added

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Channels and reduction of each scale of the feature pyramid, shallowest first.

        Traced once on the meta device (no memory, no computation, the real tensors untouched), so it is right
        for inflated, channel-adapted and anisotropic networks alike.
        """
        if self._feature_info is None:
            self.ensure_pyramid()
            spec = self.spec
            size = spec.trace_size
            tensors = chain(self.net.named_parameters(), self.net.named_buffers())
            meta = {f"net.{name}": t.to("meta") for name, t in tensors}
            x = torch.empty(1, self.in_channels, *([size] * self.spatial_dims), device="meta")
            maps = torch.func.functional_call(_StageRunner(self.net, spec), meta, (x,))
            self._feature_info = [
                FeatureInfo(i, stage.name, int(m.shape[1]), tuple(_ratio(size, int(n)) for n in m.shape[2:]))
                for i, (stage, m) in enumerate(zip(spec.stages, maps, strict=True))
            ]
        return self._feature_info

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = "X, Y" if self.spatial_dims == 2 else "X, Y, Z"
            raise ValueError(
                f"{self.arch} ({self.spatial_dims}D, {self.in_channels} input channels) expects input of shape "
                f"(B, {self.in_channels}, {axes}), but it is {tuple(x.shape)}"
            )

    def _scale_index(self, index: int) -> int:
        n = len(self.spec.stages)
        if not -n <= index < n:
            names = ", ".join(f"{i}: {s.name}" for i, s in enumerate(self.spec.stages))
            raise ValueError(
                f"out_indices holds {index}, but {self.arch} has {n} scales ({names}); negative indices count from "
                "the deepest"
            )
        return index % n

    def forward_features(
        self, x: torch.Tensor, out_indices: Sequence[int] | None = None
    ) -> torch.Tensor | list[torch.Tensor]:
        """Pooled features ``(B, num_features)``, or the feature maps of the scales in ``out_indices``.

        Args:
            x: input ``(B, in_channels, X, Y[, Z])``.
            out_indices: scales to return (see :attr:`feature_info`; negative counts from the deepest), in the
                order given. Layers deeper than the deepest one asked for are not run.

        Returns:
            The pooled features when ``out_indices`` is ``None``, else a list of ``(B, C_i, *spatial_i)`` maps.
        """
        self._check_input(x)
        if out_indices is None:
            return self.spec.features(self.net, x)
        wanted = [self._scale_index(i) for i in out_indices]
        maps: list[torch.Tensor] = []
        if wanted:
            self.ensure_pyramid()
            for fmap in run_stages(self.net, self.spec.stages, x, self.spec.stage_forward):
                maps.append(fmap)
                if len(maps) > max(wanted):
                    break
        return [maps[i] for i in wanted]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features (a headless model returns the features unchanged)."""
        if self.num_classes == 0:
            return features
        return self.spec.head(self.net, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``, or pooled features ``(B, num_features)`` for a headless model."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` for a headless model)."""
        return self.net.get_submodule(self.spec.classifier)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new random one with ``num_classes`` outputs (0: headless)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
        if num_classes == 0:
            new: nn.Module = nn.Identity()
        else:
            like = next(self.net.parameters())
            new = nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
        set_submodule(self.net, self.spec.classifier, new)
        self.num_classes = num_classes

    def param_groups(self) -> list[ParamGroup]:
        """Parameters grouped from stem to head; every parameter is in exactly one group (a headless model's
        ``head`` group holds only what remains of the head, e.g. ConvNeXt's final norm, or nothing)."""
        groups = [ParamGroup(name) for name, _ in self.spec.groups]
        for name, param in self.net.named_parameters():
            for group, (_, prefixes) in zip(groups, self.spec.groups, strict=True):
                if any(name == p or name.startswith(p + ".") for p in prefixes):
                    group.params.append(param)
                    group.param_names.append(f"net.{name}")
                    break
            else:  # pragma: no cover - a registry record that misses a module is a bug
                raise RuntimeError(f"{self.arch}: parameter {name} belongs to no layer group")
        return groups

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_classes={self.num_classes}, weights={self.weight_source.name!r}"
        )
