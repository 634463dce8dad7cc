"""`medtl backbones` and `medtl weights ...` on the command line."""

from __future__ import annotations

import json

import pytest
import torch

from medtl.cli import main


@pytest.fixture
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_backbones_json_lists_dims_and_fitting_weights(capsys):
    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet18"]["dims"] == [2, 3]
    assert rows["resnet18"]["weights"] == ["scratch", "imagenet", "imagenet-inflated", "<file>"]
    assert rows["resnet200_3d"]["weights"] == ["scratch", "medicalnet", "<file>"]
    assert rows["resnet50_3d"]["weights"] == ["scratch", "medicalnet", "medicalnet23", "<file>"]
    assert rows["resnet10_3d"]["default_in_channels"] == 1
    assert main(["backbones"]) == 0
    assert "convnext_tiny" in capsys.readouterr().out


def test_weights_list_import_verify(homes, tmp_path, capsys):
    from monai.networks.nets import resnet10

    assert main(["weights", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    files = {f"{f['source']}:{f['arch']}": f for f in listing["files"]}
    assert files["imagenet:mobilenet_v2"]["cached"] is False
    assert files["medicalnet:resnet10_3d"]["license"].startswith("MIT")
    assert {s["name"] for s in listing["sources"]} >= {"imagenet", "medicalnet", "scratch"}

    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    src = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, src)
    assert main(["weights", "import", "medicalnet:resnet10_3d", str(src)]) == 0
    assert "imported" in capsys.readouterr().out

    assert main(["weights", "list", "--json"]) == 0
    files = {f"{f['source']}:{f['arch']}": f for f in json.loads(capsys.readouterr().out)["files"]}
    assert files["medicalnet:resnet10_3d"]["cached"] is True
    assert files["medicalnet:resnet10_3d"]["size"] == src.stat().st_size
    assert files["medicalnet:resnet10_3d"]["verification"] == "unverified"  # MedicalNet publishes no hash
    assert files["imagenet:mobilenet_v2"]["verification"] == "sha256"
    assert files["imagenet:resnet18"]["verification"] == "sha256-prefix"
    assert main(["weights", "list"]) == 0
    assert "unverified" in capsys.readouterr().out

    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok") and "unverified medicalnet:resnet10_3d" in out
    assert main(["weights", "verify", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["status"] == "ok" and result["verified"] is False
    cached = homes / "medtl" / "weights" / "medicalnet" / "resnet_10.pth"
    cached.write_bytes(cached.read_bytes()[:-10])
    assert main(["weights", "verify"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_pull_offline_and_bad_names_are_one_line_errors(homes, capsys):
    assert main(["weights", "pull", "imagenet:resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "medtl weights import imagenet:resnet18" in err
    assert main(["weights", "import", "imagenet:resnet19", "x.pth"]) == 2
    assert "Did you mean 'resnet18'" in capsys.readouterr().err
    assert main(["weights", "import", "imagenet:resnet18", str(homes / "missing.pth")]) == 2
    assert "no such file" in capsys.readouterr().err
