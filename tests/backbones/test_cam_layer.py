"""The saliency layer of an architecture comes from its record (``ArchSpec.cam_layer``), for every family: the last
stage of a torchvision CNN, a MONAI 3D ResNet and a timm CNN, and a timm ViT's last block (its tokens laid out on the
patch grid); the maps MONAI's Grad-CAM makes there have the input's shape."""

from __future__ import annotations

import pytest
import torch

from medtl import create_model
from medtl.backbones import get_architecture
from medtl.backbones.registry import tokens_to_map
from medtl.train.saliency import SaliencyExplainer

# (architecture, spatial dims, input size, the record's layer, the layer's map: channels and size per axis)
CASES = [
    ("resnet18", 2, 64, "layer4", (512, 2, 2)),
    ("resnet10_3d", 3, 64, "layer4", (512, 2, 2, 2)),
    ("timm/resnet18", 2, 64, "layer4", (512, 2, 2)),
    ("timm/vit_tiny_patch16_224[img_size=64]", 2, 64, "blocks.11.norm1", (192, 4, 4)),
]


@pytest.mark.parametrize(("arch", "dims", "size", "layer", "shape"), CASES, ids=[c[0] for c in CASES])
def test_grad_cam_reads_the_records_last_stage(arch: str, dims: int, size: int, layer: str, shape: tuple) -> None:
    assert get_architecture(arch).cam_layer == layer
    torch.manual_seed(0)
    model = create_model(arch, weights="scratch", in_channels=1, num_classes=2, spatial_dims=dims).eval()
    x = torch.randn(1, 1, *([size] * dims))
    explainer = SaliencyExplainer(model, "gradcam")
    saliency = explainer(x, 1)
    assert tuple(saliency.shape) == (size,) * dims
    assert torch.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() <= 1
    # the hooks saw the layer's output as a (B, C, *spatial) map: a ViT's tokens laid out on the 4x4 patch grid
    hooks = explainer._cam.nn_module
    assert tuple(hooks.activations[f"net.{layer}"].shape) == (1, *shape)
    assert tuple(hooks.gradients[f"net.{layer}"].shape) == (1, *shape)
    assert hooks.gradients[f"net.{layer}"].abs().sum() > 0  # the class score reaches the layer
    # the original model carries no hooks (the explainer works on a copy)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_swin_reads_its_last_basic_layer_not_the_list_around_it() -> None:
    """MONAI's Swin keeps each stage in a ModuleList, which is never called: the record names the layer inside."""
    spec = get_architecture("swin_unetr_3d")
    assert spec.cam_layer == "layers4.0" and spec.stages[-1].name == "layers4"


def test_default_cam_layer_is_the_last_module_of_the_last_stage() -> None:
    assert get_architecture("densenet121").cam_layer == "features.norm5"
    assert get_architecture("segresnet_3d").cam_layer == "layers.4.blocks"


def test_tokens_to_map_drops_the_prefix_tokens_and_checks_the_grid() -> None:
    tokens = torch.arange(2 * (1 + 6) * 3, dtype=torch.float32).reshape(2, 7, 3)  # 1 class token + a 2x3 grid
    m = tokens_to_map(1, 16)(tokens, (32, 48))
    assert m.shape == (2, 3, 2, 3)
    assert torch.equal(m[0, :, 0, 1], tokens[0, 2])  # row 0, column 1: the second patch token
    with pytest.raises(ValueError, match="do not fill the 2x2 patch grid"):
        tokens_to_map(1, 16)(tokens, (32, 32))


def test_occlusion_map_has_the_input_shape() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", weights="scratch", in_channels=1, num_classes=2).eval()
    saliency = SaliencyExplainer(model, "occlusion")(torch.randn(1, 1, 32, 32), 0)
    assert tuple(saliency.shape) == (32, 32) and saliency.min() >= 0 and saliency.max() <= 1
