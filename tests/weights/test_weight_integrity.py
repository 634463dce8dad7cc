"""The file loaded is the file recorded: its own SHA-256 in the load report, changed cache files refused, NaN
weights refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import medtl.weights.cache as weight_cache
from medtl import create_model
from medtl.cli import main
from medtl.errors import HashMismatchError, WeightsError
from medtl.models import import_weights
from medtl.weights import sha256_file


def _medicalnet10(path: Path) -> dict[str, torch.Tensor]:
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B", bias_downsample=False)
    state = net.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_load_report_carries_the_hash_of_the_file_loaded(torchvision_file):
    path, _ = torchvision_file("resnet18")
    report = create_model("resnet18", weights=path).load_report
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.verified is False and report.verification.startswith("unverified")
    assert report.to_dict()["sha256"] == report.sha256 and report.sha256 in report.summary()
    scratch = create_model("resnet18").load_report
    assert scratch.sha256 is None and scratch.verified is False


def test_unpinned_cache_file_changed_after_import_is_refused(cache, tmp_path):
    src = tmp_path / "resnet_10.pth"
    _medicalnet10(src)
    dest = import_weights("medicalnet:resnet10_3d", src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()

    report = create_model("resnet10_3d", weights="medicalnet").load_report
    assert report.file == str(dest) and report.sha256 == digest
    assert report.verified is False and "unverified" in report.verification

    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, different bytes
    dest.write_bytes(bytes(data))
    with pytest.raises(HashMismatchError) as err:
        create_model("resnet10_3d", weights="medicalnet")
    text = str(err.value)
    assert f"refusing {dest}" in text and f"had {digest} when it entered the cache" in text
    assert "medtl weights import medicalnet:resnet10_3d /path/to/resnet_10.pth" in text and "\n" not in text


def test_remembered_hashes_follow_size_mtime_and_ctime(tmp_path, monkeypatch, cache):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    reads = []
    real = hashlib.sha256

    def counting():
        reads.append(1)
        return real()

    monkeypatch.setattr(weight_cache, "hashlib", type("H", (), {"sha256": staticmethod(counting)}))
    monkeypatch.setattr(weight_cache, "_RACY_NS", -(10**18))  # trust entries at once (no 2 s wait in a test)
    first = sha256_file(path)
    assert sha256_file(path) == first and len(reads) == 1  # remembered
    assert sha256_file(path, use_memo=False) == first and len(reads) == 2  # verify re-reads

    st = path.stat()
    path.write_bytes(b"b" * 1000)  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime: the ctime still moves
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest() and len(reads) == 3


def test_a_hash_remembered_right_after_a_change_is_not_trusted(tmp_path, cache):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 10)
    sha256_file(path)
    memo = weight_cache._read_memo()[str(path.resolve())]
    assert memo["sha256"] == hashlib.sha256(b"a" * 10).hexdigest()
    assert memo["hashed_ns"] - max(memo["mtime_ns"], memo["ctime_ns"]) <= weight_cache._RACY_NS  # racy: hashed again


def test_non_finite_weights_are_refused_naming_the_file_and_key(torchvision_file, tmp_path, capsys, cache):
    path, state = torchvision_file("resnet18")
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer3.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        create_model("resnet18", weights=path)
    text = str(err.value)
    assert str(path) in text and "layer2.0.conv1.weight has 1 NaN/Inf value(s)" in text and "\n" not in text

    src = tmp_path / "resnet_10.pth"
    good = _medicalnet10(src)
    good["layer1.0.bn1.running_var"][3] = float("inf")
    torch.save({"state_dict": {f"module.{k}": v for k, v in good.items()}}, src)
    assert main(["weights", "import", "medicalnet:resnet10_3d", str(src)]) == 2
    err_line = capsys.readouterr().err
    assert err_line.count("\n") == 1 and "module.layer1.0.bn1.running_var" in err_line
