"""The architecture registry: names, MedicalNet layouts as MONAI records them, layer groups."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

import medtl
from medtl.backbones import get_architecture, list_architectures
from medtl.backbones.medicalnet3d import MEDICALNET_RESNETS, depth_for_layers
from medtl.errors import UnknownOptionError

TWO_D = ["resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2", "convnext_tiny"]
THREE_D = [f"resnet{d}_3d" for d in (10, 18, 34, 50, 101, 152, 200)]


def test_every_agreed_architecture_is_registered():
    names = medtl.list_architectures()
    assert set(TWO_D + THREE_D) <= set(names)
    for name in TWO_D:
        assert get_architecture(name).supported_dims == (2, 3)
    for name in THREE_D:
        assert get_architecture(name).supported_dims == (3,)


def test_unknown_architecture_suggests_the_closest():
    with pytest.raises(UnknownOptionError, match="Did you mean 'resnet18'"):
        get_architecture("resnet-18")


@pytest.mark.parametrize("depth", sorted(MEDICALNET_RESNETS))
def test_medicalnet_layout_matches_monai_record(depth):
    spec = MEDICALNET_RESNETS[depth]
    bias, shortcut = get_medicalnet_pretrained_resnet_args(depth)
    assert spec.shortcut_type == shortcut == ("A" if depth in (18, 34) else "B")
    assert spec.bias_downsample == bias
    assert depth_for_layers(spec.layers, spec.block == "bottleneck") == depth


def test_shortcut_b_has_downsample_without_bias_and_a_has_none():
    with torch.device("meta"):
        keys10 = set(get_architecture("resnet10_3d").build(in_channels=1, num_classes=2).state_dict())
        keys18 = set(get_architecture("resnet18_3d").build(in_channels=1, num_classes=2).state_dict())
    assert "layer2.0.downsample.0.weight" in keys10
    assert "layer2.0.downsample.0.bias" not in keys10  # the key MONAI users keep missing (issues 2836, 7923)
    assert not any("downsample" in k for k in keys18)


@pytest.mark.parametrize("name", list_architectures())
def test_groups_cover_every_parameter_once_from_stem_to_head(name):
    spec = get_architecture(name)
    assert [g for g, _ in spec.groups][0] == "stem"
    assert [g for g, _ in spec.groups][-1] == "head"
    with torch.device("meta"):
        net = spec.build(in_channels=spec.default_in_channels, num_classes=3)
    owners = {}
    for pname, _ in net.named_parameters():
        hits = [g for g, prefixes in spec.groups if any(pname == p or pname.startswith(p + ".") for p in prefixes)]
        owners[pname] = hits
    assert all(len(h) == 1 for h in owners.values()), {k: v for k, v in owners.items() if len(v) != 1}
    assert net.get_submodule(spec.classifier).out_features == 3
    assert isinstance(net.get_submodule(spec.first_conv), torch.nn.modules.conv._ConvNd)
