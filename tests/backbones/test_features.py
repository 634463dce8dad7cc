"""The encoder API: multi-scale feature maps, their channels and reductions, and headless models."""

from __future__ import annotations

import pytest
import torch

from medtl import create_model
from medtl.backbones import get_architecture
from medtl.models import LoadReport, MedtlModel
from medtl.weights import get_weight_source

# arch, spatial_dims, input size, channels per scale, reduction per scale (the same on every axis)
CASES = [
    ("resnet18", 2, (64, 96), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("mobilenet_v2", 2, (64, 96), [16, 24, 32, 96, 320], [2, 4, 8, 16, 32]),
    ("resnet10_3d", 3, (64, 32, 32), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("resnet18", 3, (64, 32, 32), [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),  # inflated
]


@pytest.mark.parametrize("arch,dims,size,channels,reductions", CASES, ids=[f"{c[0]}-{c[1]}d" for c in CASES])
def test_feature_maps_have_the_announced_channels_and_reductions(arch, dims, size, channels, reductions):
    torch.manual_seed(0)
    model = create_model(arch, spatial_dims=dims, num_classes=3).eval()
    info = model.feature_info
    assert [f.channels for f in info] == channels
    assert [f.reduction for f in info] == [(r,) * dims for r in reductions]
    assert [f.index for f in info] == list(range(len(info)))

    x = torch.randn(2, model.in_channels, *size)
    with torch.no_grad():
        maps = model.forward_features(x, out_indices=range(len(info)))
        pooled = model.forward_features(x)
        deepest_first = model.forward_features(x, out_indices=[-1, 0])
    for fmap, f in zip(maps, info, strict=True):
        assert fmap.shape == (2, f.channels, *(s // r for s, r in zip(size, f.reduction, strict=True)))
    assert pooled.shape == (2, model.num_features)
    assert [m.shape for m in deepest_first] == [maps[-1].shape, maps[0].shape]
    assert torch.equal(deepest_first[0], maps[-1])


def test_resnet_pooled_features_are_the_mean_of_the_deepest_map():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (deepest,) = model.forward_features(x, out_indices=[4])
        assert torch.allclose(model.forward_features(x), deepest.mean(dim=(2, 3)), atol=1e-6)


def test_anisotropic_stem_gives_per_axis_reductions():
    # the CT I3ResNet-152 stem strides (2, 2, 1); traced on the meta device, so the deep network costs nothing
    spec = get_architecture("i3resnet152_3d")
    with torch.device("meta"):
        net = spec.build(in_channels=3, num_classes=2)
    model = MedtlModel(
        net,
        arch=spec.name,
        spatial_dims=3,
        in_channels=3,
        num_classes=2,
        weight_source=get_weight_source("scratch"),
        load_report=LoadReport(source="scratch", arch=spec.name),
    )
    assert [f.channels for f in model.feature_info] == [64, 256, 512, 1024, 2048]
    assert [f.reduction for f in model.feature_info] == [(2, 2, 1), (4, 4, 2), (8, 8, 4), (16, 16, 8), (32, 32, 16)]


def test_tracing_the_feature_info_leaves_the_model_untouched():
    model = create_model("resnet10_3d").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert len(model.feature_info) == 5
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


def test_bad_out_indices_name_the_scales():
    model = create_model("resnet18")
    with pytest.raises(ValueError, match=r"out_indices holds 5, but resnet18 has 5 scales \(0: stem, 1: layer1"):
        model.forward_features(torch.zeros(1, 3, 32, 32), out_indices=[5])


@pytest.mark.parametrize("arch,dims", [("resnet18", 2), ("mobilenet_v2", 2), ("resnet10_3d", 3)])
def test_headless_model_returns_pooled_features(arch, dims):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=0, spatial_dims=dims).eval()
    x = torch.randn(2, model.in_channels, *([32] * dims))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, model.num_features)
        assert torch.equal(out, model.forward_features(x))
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    assert not any(n.startswith(get_architecture(arch).classifier + ".") for n, _ in model.net.named_parameters())
    assert "headless" in model.load_report.summary()
    model.reset_classifier(4)
    with torch.no_grad():
        assert model(x).shape == (2, 4)
    assert model.num_classes == 4


def test_headless_model_loads_the_backbone_and_leaves_the_file_head_unused(torchvision_file):
    path, state = torchvision_file("resnet18")
    model = create_model("resnet18", weights=path, num_classes=0)
    report = model.load_report
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"] and not report.left_random
    own = model.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
