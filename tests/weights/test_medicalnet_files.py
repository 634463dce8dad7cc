"""MedicalNet checkpoints in their exact format, for every depth, against MONAI's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.model_states import randomize_
from monai.networks.nets import resnet as monai_resnet

from medtl import create_model
from medtl.cli import main
from medtl.errors import CheckpointMismatchError
from medtl.weights import get_weight_source
from medtl.weights.cache import cache_path


def write_medicalnet_file(path: Path, depth: int, *, legacy: bool = False) -> dict[str, torch.Tensor]:
    """Write ``{"state_dict": {"module.<key>": tensor}}`` as MedicalNet's releases are, built the way MONAI
    says the released files are (``get_medicalnet_pretrained_resnet_args``), with random values."""
    bias_downsample, shortcut = monai_resnet.get_medicalnet_pretrained_resnet_args(depth)
    net = getattr(monai_resnet, f"resnet{depth}")(
        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=shortcut, bias_downsample=bias_downsample
    )
    state = randomize_(net.state_dict(), seed=depth)
    del net
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        path,
        _use_new_zipfile_serialization=not legacy,  # the 2019 releases predate torch's zip format
    )
    return state


def _monai_loaded(depth: int, path: Path, monkeypatch) -> torch.nn.Module:
    """MONAI's resnet{depth}(pretrained=True) with the flags MONAI requires, its hub download pointed at ``path``."""
    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(monai_resnet, "hf_hub_download", fake_download)
    bias_downsample, shortcut = monai_resnet.get_medicalnet_pretrained_resnet_args(depth)
    net = getattr(monai_resnet, f"resnet{depth}")(
        pretrained=True,
        spatial_dims=3,
        n_input_channels=1,
        feed_forward=False,
        shortcut_type=shortcut,
        bias_downsample=bias_downsample,
    )
    assert requested[0][0] == f"TencentMedicalNet/MedicalNet-Resnet{depth}"
    return net


@pytest.mark.parametrize(
    "depth",
    [
        10,
        18,
        pytest.param(34, marks=pytest.mark.slow),
        50,
        *(pytest.param(d, marks=pytest.mark.slow) for d in (101, 152, 200)),
    ],
)
def test_every_depth_loads_exactly_as_monai_loads_it(tmp_path, monkeypatch, depth):
    path = tmp_path / f"resnet_{depth}.pth"
    state = write_medicalnet_file(path, depth, legacy=depth == 10)
    model = create_model(f"resnet{depth}_3d", weights=path)
    report = model.load_report
    assert report.format == "MedicalNet (state_dict, module. prefix)" and report.prefix == "module."
    assert sorted(report.left_random) == ["fc.bias", "fc.weight"] and not report.unexpected
    own = model.net.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    del state

    reference = _monai_loaded(depth, path, monkeypatch).state_dict()
    for key, value in reference.items():
        assert torch.equal(own[key], value), key
    assert set(own) - set(reference) == {"fc.weight", "fc.bias"}

    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 2)


def test_monai_local_path_route_agrees(tmp_path):
    """MONAI's pretrained=<path> reads a flat state dict (it does not unwrap "state_dict")."""
    state = write_medicalnet_file(tmp_path / "resnet_18.pth", 18)
    flat = tmp_path / "resnet_18_flat.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, flat)
    theirs = monai_resnet.resnet18(
        pretrained=str(flat), spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="A"
    ).state_dict()
    ours = create_model("resnet18_3d", weights=tmp_path / "resnet_18.pth").net.state_dict()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("medicalnet")
    out = {}
    for depth in (10, 18, 50):
        out[depth] = root / f"resnet_{depth}.pth"
        write_medicalnet_file(out[depth], depth)
    return out


def test_wrong_depth_names_the_depth_of_the_file(files):
    with pytest.raises(CheckpointMismatchError, match="it looks like resnet50") as err:
        create_model("resnet101_3d", weights=files[50])
    assert "layer3.6.conv1.weight" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="it looks like resnet18"):
        create_model("resnet10_3d", weights=files[18])
    with pytest.raises(CheckpointMismatchError, match="it looks like resnet10"):
        create_model("resnet18_3d", weights=files[10])


def test_import_then_load_from_the_cache(files, cache, capsys):
    assert main(["weights", "import", "medicalnet:resnet10_3d", str(files[10])]) == 0
    cached = cache_path("medicalnet", "resnet10_3d")
    assert cached == cache["medtl"] / "weights" / "medicalnet" / "resnet_10.pth"
    assert cached.read_bytes() == files[10].read_bytes()
    model = create_model("resnet10_3d", weights="medicalnet")
    assert model.weight_source is get_weight_source("medicalnet")
    assert model.weight_source.normalization.kind == "zscore_nonzero"
    assert model.load_report.file == str(cached)

    # short names, and the 23-dataset files
    assert main(["weights", "import", "medicalnet23:18", str(files[18])]) == 0
    assert (cache["medtl"] / "weights" / "medicalnet23" / "resnet_18_23dataset.pth").is_file()
    assert create_model("resnet18_3d", weights="medicalnet23").load_report.pretrained
    capsys.readouterr()

    # a file of the wrong depth is refused before it enters the cache
    assert main(["weights", "import", "medicalnet:resnet50_3d", str(files[18])]) == 2
    assert "it looks like resnet18" in capsys.readouterr().err
    assert not cache_path("medicalnet", "resnet50_3d").exists()
