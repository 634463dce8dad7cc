"""create_model: every architecture builds, runs, groups its parameters and resets its head."""

from __future__ import annotations

import pytest
import torch

from medtl import create_model, list_architectures
from medtl.errors import UnknownOptionError
from medtl.models import MedtlModel


def _input(model: MedtlModel, batch: int = 2) -> torch.Tensor:
    size = [32, 32] if model.spatial_dims == 2 else [16, 16, 16]
    return torch.randn(batch, model.in_channels, *size)


# The deeper 3D ResNets share this code path; their layouts and groups are checked on the meta device in
# test_backbone_registry.py and their forward passes with weights in tests/weights/test_medicalnet_files.py. MONAI's
# Swin and SegResNet encoders need inputs of 32 voxels and more: test_monai3d_family.py runs their small variants.
HEAVY = ("resnet101_3d", "resnet152_3d", "resnet200_3d", "i3resnet152_3d")
HEAVY += ("swin_unetr_3d", "swin_unetr_v2_3d", "segresnet_3d")
LIGHT = [a for a in list_architectures() if a not in HEAVY]


@pytest.mark.parametrize("arch", LIGHT)
def test_scratch_model_runs_and_exposes_the_surface(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=3).eval()
    x = _input(model)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert logits.shape == (2, 3)
    assert feats.shape == (2, model.num_features)
    assert torch.isfinite(logits).all()
    assert torch.allclose(model.forward_head(feats), logits, atol=1e-5)

    groups = model.param_groups()
    assert [g.name for g in groups][0] == "stem" and groups[-1].name == "head"
    names = [n for g in groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert {id(p) for p in model.get_classifier().parameters()} <= {id(p) for p in groups[-1].params}

    report = model.load_report
    assert model.weight_source.name == "scratch" and not report.pretrained
    assert set(report.left_random) == set(model.net.state_dict())

    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    assert model.num_classes == 5


def test_default_in_channels_and_dims_follow_weights_and_arch():
    m2 = create_model("resnet18")
    assert (m2.spatial_dims, m2.in_channels) == (2, 3)
    m3 = create_model("resnet10_3d")
    assert (m3.spatial_dims, m3.in_channels) == (3, 1)
    inflated = create_model("mobilenet_v2", spatial_dims=3, in_channels=1)
    assert (inflated.spatial_dims, inflated.in_channels) == (3, 1)
    assert inflated.net.features[0][0].weight.ndim == 5


def test_wrong_input_shape_is_a_clear_error():
    model = create_model("resnet18", in_channels=1)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 1, X, Y\), but it is \(2, 3, 32, 32\)"):
        model(torch.zeros(2, 3, 32, 32))


def test_sources_that_do_not_fit_are_refused():
    with pytest.raises(UnknownOptionError, match="no weights for 'resnet18'"):
        create_model("resnet18", weights="medicalnet")
    with pytest.raises(UnknownOptionError, match="3D only"):
        create_model("resnet10_3d", spatial_dims=2)
    with pytest.raises(UnknownOptionError, match="medicalnet23"):
        create_model("resnet101_3d", weights="medicalnet23")
    with pytest.raises(UnknownOptionError, match="Did you mean 'imagenet'"):
        create_model("resnet18", weights="imagenet1k")
