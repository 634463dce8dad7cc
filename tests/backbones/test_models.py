"""medtl.models joins architectures and weight sources: the layering, the resolved source, the expected input."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import medtl
from medtl import create_model
from medtl.errors import UnknownOptionError
from medtl.models import expected_input, weight_source_for
from medtl.weights import get_weight_source, is_weight_file_path, sources_for_arch

PACKAGE = Path(medtl.__file__).parent


def _imports(package: str) -> set[str]:
    """Every module imported anywhere in ``medtl/<package>/`` (function-local and TYPE_CHECKING imports too)."""
    found = set()
    for path in (PACKAGE / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package,forbidden", [("weights", "backbones"), ("backbones", "weights")])
def test_weights_and_backbones_do_not_import_each_other(package, forbidden):
    imported = _imports(package)
    assert any(m.startswith(f"medtl.{package}.") for m in imported)  # the scan sees the package's own imports
    assert not {m for m in imported if m.startswith((f"medtl.{forbidden}", "medtl.models"))}


@pytest.mark.parametrize(
    "weights,arch,kw,channels,norm,dims",
    [
        ("ct-i3resnet152", "i3resnet152_3d", {}, 3, "none", 3),  # 3 channels although its normalisation is "none"
        ("imagenet", "resnet18", {}, 3, "imagenet", 2),
        ("imagenet", "resnet18", {"spatial_dims": 3}, 3, "imagenet", 3),
        ("medicalnet", "resnet10_3d", {}, 1, "zscore_nonzero", 3),
        ("scratch", "resnet18", {}, 3, "none", 2),
        ("scratch", "resnet18", {"data_channels": 1}, 1, "none", 2),
        ("scratch", "i3resnet152_3d", {}, 3, "none", 3),
        ("scratch", "resnet10_3d", {}, 1, "none", 3),
        ("./model.pth", "resnet50_3d", {"data_channels": 2}, 2, "none", 3),
    ],
)
def test_expected_input(weights, arch, kw, channels, norm, dims):
    got = expected_input(get_weight_source(weights), arch, **kw)
    assert (got.in_channels, got.normalization.kind, got.spatial_dims) == (channels, norm, dims)
    if norm == "imagenet":
        assert got.normalization.mean == (0.485, 0.456, 0.406) and got.normalization.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("weights,arch,dims", [("scratch", "resnet18", 3), ("scratch", "resnet10_3d", None)])
def test_create_model_reads_the_same_channels_as_the_transforms(weights, arch, dims):
    source = weight_source_for(arch, weights, spatial_dims=dims)
    model = create_model(arch, weights=source, spatial_dims=dims)
    assert model.in_channels == expected_input(source, arch, spatial_dims=dims).in_channels
    assert model.weight_source is source


def test_a_resolved_source_is_passed_down_once(torchvision_file):
    path, state = torchvision_file("resnet18")
    source = weight_source_for("resnet18", str(path))
    assert source.name == "file" and source.path == str(path)
    model = create_model("resnet18", weights=source, num_classes=1000)
    assert model.weight_source is source and model.load_report.file == str(path)
    assert torch.equal(model.net.conv1.weight, state["conv1.weight"])
    assert weight_source_for("resnet18", "imagenet", spatial_dims=3).name == "imagenet-inflated"
    with pytest.raises(UnknownOptionError, match="weights for resnet18: scratch, imagenet, imagenet-inflated"):
        weight_source_for("resnet18", get_weight_source("medicalnet"))


def test_one_test_says_what_is_a_file_path(tmp_path):
    assert not is_weight_file_path("imagenet") and not is_weight_file_path("medicalnet23")
    assert is_weight_file_path("model.pth") and is_weight_file_path("BEST.CKPT")
    assert is_weight_file_path("runs/a/best") and is_weight_file_path(tmp_path / "x")
    assert is_weight_file_path("encoder.safetensors") and is_weight_file_path("model.pth.tar")
    assert not is_weight_file_path("imagenet1k")  # a typo is a source name to correct, not a file


def test_sources_for_arch():
    assert sources_for_arch("resnet50_3d") == ["medicalnet", "medicalnet23"]
    assert sources_for_arch("resnet200_3d") == ["medicalnet"]
    assert sources_for_arch("resnet18") == ["imagenet", "imagenet-inflated"]
    assert sources_for_arch("resnet18", dims=3) == ["imagenet-inflated"]
    assert sources_for_arch("i3resnet152_3d") == ["ct-i3resnet152", "merlin"]
    assert sources_for_arch("i3resnet152_3d", zoo=False) == ["ct-i3resnet152"]
