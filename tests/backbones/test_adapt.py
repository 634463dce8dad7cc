"""First-convolution adaptation to other channel counts, 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from helpers.model_states import randomize_

from medtl import create_model
from medtl.backbones import adapt_input_conv


@pytest.mark.parametrize("shape", [(8, 3, 7, 7), (8, 3, 3, 3, 3)])
def test_one_channel_sums_and_more_channels_repeat_and_rescale(shape):
    w = torch.randn(shape)
    one, how = adapt_input_conv(w, 1)
    assert torch.allclose(one, w.sum(1, keepdim=True)) and "summed 3" in how
    five, how = adapt_input_conv(w, 5)
    assert five.shape[1] == 5 and "repeated" in how
    assert torch.allclose(five[:, :3], w * 3 / 5) and torch.allclose(five[:, 3:], w[:, :2] * 3 / 5)
    same, how = adapt_input_conv(w, 3)
    assert same is w and how == "unchanged"


def test_grey_image_one_channel_model_equals_rgb_model_on_repeated_image(torchvision_file):
    path, _ = torchvision_file("resnet18")
    rgb = create_model("resnet18", weights=path).eval()
    grey = create_model("resnet18", weights=path, in_channels=1).eval()
    report = grey.load_report
    assert report.adapted == {"conv1.weight": "summed 3 input channels into 1"}
    assert "adapted conv1.weight: summed 3 input channels into 1" in report.summary()
    # the head is random in each model: compare features, then logits with the same head
    grey.net.fc.load_state_dict(rgb.net.fc.state_dict())
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(grey(image), rgb(image.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_one_channel_3d_weights_on_three_channels(tmp_path):
    from monai.networks.nets import resnet10

    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    state = randomize_(net.state_dict())
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    one = create_model("resnet10_3d", weights=path).eval()
    three = create_model("resnet10_3d", weights=path, in_channels=3).eval()
    assert three.load_report.adapted["conv1.weight"].startswith("repeated 1 input channel(s) over 3")
    volume = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        f1 = one.forward_features(volume)
        f3 = three.forward_features(volume.expand(-1, 3, -1, -1, -1))
    assert torch.allclose(f1, f3, rtol=1e-4, atol=1e-5 * float(f1.abs().max()))
