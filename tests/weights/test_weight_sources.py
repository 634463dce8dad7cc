"""Weight sources are records that agree with torchvision's enums and MedicalNet's hub layout."""

from __future__ import annotations

import pytest
import torchvision

from medtl import get_weight_source, list_weight_sources
from medtl.errors import UnknownOptionError
from medtl.weights.sources import IMAGENET_ARCHS, MEDICALNET_DEPTHS


def test_the_agreed_sources_exist():
    assert {"scratch", "imagenet", "imagenet-inflated", "medicalnet", "medicalnet23"} <= set(list_weight_sources())


@pytest.mark.parametrize("arch", sorted(IMAGENET_ARCHS))
def test_imagenet_records_match_torchvision_enums(arch):
    enum = getattr(torchvision.models.get_model_weights(arch), IMAGENET_ARCHS[arch])
    source = get_weight_source("imagenet")
    f = source.file_for(arch)
    assert f.url == enum.url
    assert f.filename == enum.url.rsplit("/", 1)[1]
    assert enum.url.rsplit("-", 1)[1].startswith(f.sha256_prefix)
    transform = enum.transforms()
    assert source.normalization.kind == "imagenet"
    assert list(source.normalization.mean) == list(transform.mean)
    assert list(source.normalization.std) == list(transform.std)
    assert source.in_channels == 3 and source.dims == 2


def test_known_hash_licence_citation():
    imagenet = get_weight_source("imagenet")
    assert imagenet.pinned_sha256["mobilenet_v2"] == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    for name in list_weight_sources():
        source = get_weight_source(name)
        assert source.license
        assert source.citation or name == "scratch"
        assert source.to_dict()["name"] == name
    inflated = get_weight_source("imagenet-inflated")
    assert inflated.dims == 3 and inflated.file_for("resnet18") == imagenet.file_for("resnet18")


def test_medicalnet_records():
    mn, mn23 = get_weight_source("medicalnet"), get_weight_source("medicalnet23")
    assert mn.archs == tuple(f"resnet{d}_3d" for d in MEDICALNET_DEPTHS)
    for depth in MEDICALNET_DEPTHS:
        f = mn.file_for(f"resnet{depth}_3d")
        assert f.hf_repo == f"TencentMedicalNet/MedicalNet-Resnet{depth}" and f.filename == f"resnet_{depth}.pth"
    assert mn23.file_for("resnet50_3d").filename == "resnet_50_23dataset.pth"
    assert mn.in_channels == mn23.in_channels == 1
    assert mn.normalization.kind == mn23.normalization.kind == "zscore_nonzero"
    with pytest.raises(UnknownOptionError, match="no weights for architecture 'resnet200_3d'"):
        mn23.file_for("resnet200_3d")


def test_paths_and_unknown_names(tmp_path):
    source = get_weight_source(str(tmp_path / "model.ckpt"))
    assert source.name == "file" and source.path == str(tmp_path / "model.ckpt")
    assert get_weight_source(tmp_path / "x.pth").name == "file"
    with pytest.raises(UnknownOptionError, match="Did you mean 'medicalnet'"):
        get_weight_source("medicalnett")
