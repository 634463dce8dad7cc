"""I3D inflation: a volume of identical slices gives the 2D network's output on that slice."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.model_states import randomize_

from medtl import create_model
from medtl.backbones import inflate_network
from medtl.backbones.inflate import InflatedConv3d


def _volume(image: torch.Tensor, depth: int) -> torch.Tensor:
    """(B, C, X, Y) -> (B, C, X, Y, Z) with every slice along Z equal to the image (medtl's layout)."""
    return image.unsqueeze(-1).expand(*image.shape, depth).contiguous()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0", "convnext_tiny"])
def test_identical_slices_give_the_2d_output(arch):
    torch.manual_seed(0)
    model2d = create_model(arch, num_classes=4)
    randomize_(model2d.net.state_dict())  # non-trivial norm statistics
    model2d = model2d.eval()
    model3d = copy.deepcopy(model2d)
    inflate_network(model3d.net)
    model3d.spatial_dims = 3
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d)) for m in model3d.modules())

    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        logits2d, feats2d = model2d(image), model2d.forward_features(image)
    # exact in exact arithmetic; float32 only rounds the kernel copies (w / depth) differently
    tol = dict(rtol=1e-4, atol=1e-5 * float(feats2d.abs().max()))
    with torch.no_grad():
        for depth in (1, 5):  # a single slice, and a volume thinner than the 7-deep stem kernel
            volume = _volume(image, depth)
            assert torch.allclose(model3d(volume), logits2d, **tol)
            assert torch.allclose(model3d.forward_features(volume), feats2d, **tol)
    assert feats2d.abs().max() > 0.1  # the comparison is on real signal, not zeros


def test_kernels_are_repeated_over_depth_and_divided_by_it():
    torch.manual_seed(0)
    model2d = create_model("resnet18")
    conv2d = model2d.net.conv1.weight.detach().clone()
    model3d = create_model("resnet18", spatial_dims=3)
    net = copy.deepcopy(model2d.net)
    inflate_network(net)
    assert isinstance(net.conv1, InflatedConv3d)
    assert net.conv1.weight.shape == (64, 3, 7, 7, 7)
    assert net.conv1.stride == (2, 2, 2)
    for z in range(7):
        assert torch.equal(net.conv1.weight[..., z], conv2d / 7)
    assert torch.allclose(net.conv1.weight.sum(-1), conv2d, atol=1e-6)
    assert model3d.net.conv1.weight.shape == (64, 3, 7, 7, 7)


def test_inflated_network_shrinks_depth_like_the_image_plane():
    model = create_model("resnet18", spatial_dims=3).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32, 32)
        out = model.net.layer4(
            model.net.layer3(
                model.net.layer2(model.net.layer1(model.net.maxpool(model.net.relu(model.net.bn1(model.net.conv1(x))))))
            )
        )
    assert out.shape == (1, 512, 1, 1, 1)


def test_create_model_inflates_a_2d_checkpoint(torchvision_file):
    path, state = torchvision_file("mobilenet_v2")
    m2 = create_model("mobilenet_v2", weights=path, num_classes=1000).eval()
    m3 = create_model("mobilenet_v2", weights=path, num_classes=1000, spatial_dims=3).eval()
    assert m3.spatial_dims == 3 and any("inflated to 3D" in n for n in m3.load_report.notes)
    kernel3d = m3.net.features[0][0].weight.float()
    assert kernel3d.shape == (32, 3, 3, 3, 3)
    assert torch.allclose(kernel3d.sum(-1), state["features.0.0.weight"], atol=1e-6)
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = m2(image)
        assert torch.allclose(m3(_volume(image, 4)), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
