"""The cache: cached files need no network, downloads that fail say how to import, hashes are checked."""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error

import pytest
import torch
from helpers.model_states import torchvision_state

from medtl import create_model
from medtl.errors import HashMismatchError, WeightsNotAvailableError
from medtl.models import import_weights
from medtl.weights import cache_path, verify_cache
from medtl.weights.cache import download, parse_weight_name, sha256_file


def _no_network(monkeypatch):
    """Make every download attempt fail loudly, with downloads otherwise allowed."""
    import huggingface_hub
    import torch.hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("network unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MEDTL_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    return calls


def _pin(monkeypatch, source_name: str, arch: str, digest: str) -> None:
    """Make the registry pin ``digest``'s torchvision-style prefix for one file, as if it were the published one."""
    from medtl.weights import sources

    source = sources._SOURCES[source_name]
    files = tuple(
        dataclasses.replace(f, sha256=None, sha256_prefix=digest[:8]) if f.arch == arch else f for f in source.files
    )
    monkeypatch.setitem(sources._SOURCES, source_name, dataclasses.replace(source, files=files))


def test_cached_torchvision_file_is_used_without_network(cache, monkeypatch):
    state = torchvision_state("resnet18")
    path = cache["torch"] / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert cache_path("imagenet", "resnet18") == path
    calls = _no_network(monkeypatch)
    with pytest.raises(HashMismatchError, match="is pinned to f37072fd") as err:  # not torchvision's file
        create_model("resnet18", weights="imagenet")
    assert "medtl weights import imagenet:resnet18 /path/to/resnet18-f37072fd.pth" in str(err.value)

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _pin(monkeypatch, "imagenet", "resnet18", digest)
    model = create_model("resnet18", weights="imagenet")
    assert not calls
    assert model.load_report.file == str(path)
    assert model.load_report.sha256 == digest and model.load_report.verified
    assert torch.equal(model.net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.weight_source.normalization.mean == (0.485, 0.456, 0.406)


def test_failed_download_names_url_and_import_command(cache, monkeypatch):
    calls = _no_network(monkeypatch)
    with pytest.raises(WeightsNotAvailableError) as err:
        create_model("resnet34", weights="imagenet")
    text = str(err.value)
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in text
    assert "medtl weights import imagenet:resnet34 /path/to/resnet34-b627a593.pth" in text
    assert len(calls) == 1

    with pytest.raises(WeightsNotAvailableError) as err:
        create_model("resnet50_3d", weights="medicalnet23")
    text = str(err.value)
    assert "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet50/resolve/main/resnet_50_23dataset.pth" in text
    assert "medtl weights import medicalnet23:resnet50_3d /path/to/resnet_50_23dataset.pth" in text

    with pytest.raises(WeightsNotAvailableError, match="medtl weights import imagenet:mobilenet_v2"):
        create_model("mobilenet_v2", weights="imagenet-inflated")


def test_offline_mode_fails_at_once(cache):
    with pytest.raises(WeightsNotAvailableError, match="downloads are off"):
        download("imagenet", "densenet121")


def test_import_checks_the_hash_prefix_and_verify_finds_corruption(cache, tmp_path):
    state = torchvision_state("resnet18")
    wrong = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, wrong)  # right name, wrong bytes: torchvision's hash prefix does not match
    with pytest.raises(HashMismatchError, match="does not start with f37072fd"):
        import_weights("imagenet:resnet18", wrong)
    assert not cache_path("imagenet", "resnet18").exists()

    medicalnet = tmp_path / "resnet_10.pth"
    from monai.networks.nets import resnet10

    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, medicalnet)
    dest = import_weights("medicalnet:resnet10_3d", medicalnet)
    assert [r.status for r in verify_cache()] == ["ok"]  # no published hash: the one recorded at import
    assert sha256_file(dest) == sha256_file(medicalnet)
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    (result,) = verify_cache()
    assert result.status == "mismatch" and "expected" in result.detail


def test_weight_names():
    assert parse_weight_name("imagenet:mobilenet_v2")[1] == "mobilenet_v2"
    assert parse_weight_name("medicalnet:resnet18")[1] == "resnet18_3d"
    assert parse_weight_name("medicalnet:152")[1] == "resnet152_3d"
    assert parse_weight_name("imagenet-inflated:resnet18")[0].name == "imagenet"
    with pytest.raises(ValueError, match="'<source>:<architecture>'"):
        parse_weight_name("mobilenet_v2")
