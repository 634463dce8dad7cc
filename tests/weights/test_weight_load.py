"""Safe loading: formats detected, every backbone tensor equal to the file's, clear errors for bad files."""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers.model_states import torchvision_state

from medtl import create_model
from medtl.errors import CheckpointMismatchError, UnsafeCheckpointError, WeightsError, WeightsNotAvailableError
from medtl.weights import load_checkpoint, read_checkpoint


def _assert_backbone_equal(model, state, *, head="fc."):
    own = model.net.state_dict()
    checked = 0
    for key, value in state.items():
        if key.startswith(head):
            continue
        assert torch.equal(own[key], value), key
        checked += 1
    assert checked == len([k for k in own if not k.startswith(head)])


@pytest.mark.parametrize("arch,head", [("resnet18", "fc."), ("mobilenet_v2", "classifier.1.")])
def test_torchvision_file_loads_every_tensor(torchvision_file, arch, head):
    path, state = torchvision_file(arch)
    model = create_model(arch, weights=path, num_classes=1000)
    report = model.load_report
    assert report.format == "plain state dict" and report.prefix == ""
    assert sorted(report.matched) == sorted(state) and not report.left_random and not report.unexpected
    for key, value in state.items():
        assert torch.equal(model.net.state_dict()[key], value), key

    small = create_model(arch, weights=path, num_classes=2)
    _assert_backbone_equal(small, state, head=head)
    assert sorted(small.load_report.left_random) == [f"{head}bias", f"{head}weight"]
    assert small.load_report.summary().count("left random") == 1


def _lightning(state):
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.net.{k}": v for k, v in state.items()} | {"criterion.weight": torch.ones(2)},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hyper_parameters": {"arch": "resnet18", "lr": 0.001},
    }


@pytest.mark.parametrize(
    "wrap,fmt,prefix",
    [
        (_lightning, "Lightning checkpoint", "model.net."),
        (lambda s: {"model": s, "epoch": 1}, "state dict wrapped in 'model'", ""),
        (lambda s: {"net": {f"backbone.{k}": v for k, v in s.items()}}, "state dict wrapped in 'net'", "backbone."),
        (lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}, "MedicalNet", "module."),
        (lambda s: {f"net.{k}": v for k, v in s.items()}, "plain state dict", "net."),
    ],
)
def test_wrappers_and_prefixes_are_detected(tmp_path, wrap, fmt, prefix):
    state = torchvision_state("resnet18", seed=1)
    path = tmp_path / "ckpt.ckpt"
    torch.save(wrap(state), path)
    model = create_model("resnet18", weights=path)
    assert model.load_report.format.startswith(fmt)
    assert model.load_report.prefix == prefix
    _assert_backbone_equal(model, state)


def test_a_medtl_model_state_dict_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    model = create_model("resnet18", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    again = create_model("resnet18", weights=tmp_path / "model.pth", num_classes=3)
    assert not again.load_report.left_random  # head has the same size: loaded too
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)

    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, tmp_path / "model.safetensors")
    st = create_model("resnet18", weights=str(tmp_path / "model.safetensors"), num_classes=3)
    assert st.load_report.format == "plain state dict"
    assert torch.equal(st.net.conv1.weight, model.net.conv1.weight)


def test_densenet_legacy_torchvision_keys(tmp_path):
    """torchvision's DenseNet files use the old key names ``norm.1``/``conv.1``."""
    import re

    state = torchvision_state("densenet121")
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, tmp_path / "densenet121-a639ec97.pth")
    model = create_model("densenet121", weights=tmp_path / "densenet121-a639ec97.pth")
    _assert_backbone_equal(model, state, head="classifier.")


def test_checkpoint_for_another_architecture_names_the_problem(torchvision_file):
    path, _ = torchvision_file("resnet50")
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("resnet18", weights=path)
    text = str(err.value)
    assert "does not fit resnet18" in text and "with other shapes" in text and "layer1.0.conv1.weight" in text
    assert "nothing was loaded" in text

    path, _ = torchvision_file("mobilenet_v2")
    with pytest.raises(CheckpointMismatchError, match=r"backbone tensors missing from the file \(conv1.weight"):
        create_model("resnet18", weights=path)


def test_unrelated_file_is_a_mismatch_not_a_random_model(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        create_model("resnet18", weights=tmp_path / "other.pth")


class Payload:  # a pickled object: unpickling it could run code
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*Unpickling runs code"):
        create_model("resnet18", weights=path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": Payload()}, protocol=4))
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(raw)
    assert "this ran" not in capsys.readouterr().out


def test_corrupt_truncated_empty_and_missing_files(tmp_path, torchvision_file):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 50)
    with pytest.raises(WeightsError, match="garbage.pth is not a readable PyTorch checkpoint"):
        create_model("resnet18", weights=garbage)

    path, _ = torchvision_file("resnet18")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt, truncated"):
        create_model("resnet18", weights=truncated)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        read_checkpoint(empty)

    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_checkpoint(bad_st)

    with pytest.raises(WeightsNotAvailableError, match="does not exist"):
        create_model("resnet18", weights=tmp_path / "nope.pth")


def test_a_file_without_a_state_dict(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(WeightsError, match="holds a Tensor, not a state dict"):
        load_checkpoint(tmp_path / "tensor.pth")
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="no tensors"):
        load_checkpoint(tmp_path / "meta.pth")


def test_what_the_file_lacks_is_initialised_not_left_as_garbage(tmp_path):
    """Old files lack the batch-norm counters; the head is new: both get proper values."""
    state = {k: v for k, v in torchvision_state("resnet18").items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    model = create_model("resnet18", weights=tmp_path / "old.pth", num_classes=2)
    assert int(model.net.bn1.num_batches_tracked) == 0
    head = model.net.fc.weight
    assert torch.isfinite(head).all() and 0 < float(head.abs().max()) <= 1 / 512**0.5 + 1e-6
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 32, 32))).all()
