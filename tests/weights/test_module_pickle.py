"""Whole pickled models (torchxrayvision's published files) are read as tensors only; a planted callable is refused
before anything runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from medtl.errors import UnsafeCheckpointError
from medtl.weights.load import load_checkpoint, read_checkpoint
from medtl.weights.module_pickle import ModuleStub, pickled_globals, read_module_pickle


class _Plant:
    """Unpickling this runs ``os.system`` (the attack a pickled model file can carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def xrv_model() -> nn.Module:
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    return xrv.models.DenseNet(weights=None).eval()


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_every_tensor_of_a_pickled_xrv_model_is_read_without_its_classes(tmp_path, xrv_model, legacy):
    path = tmp_path / "densenet.pt"
    torch.save(xrv_model, path, _use_new_zipfile_serialization=not legacy)  # how xrv publishes its files
    names = pickled_globals(path)
    assert "torchxrayvision.models.DenseNet" in names and "torch.nn.modules.conv.Conv2d" in names
    with pytest.raises(UnsafeCheckpointError):  # the ordinary safe reader refuses the module tree
        read_checkpoint(path)

    state = read_module_pickle(path)
    expected = xrv_model.state_dict()
    assert list(state) == list(expected) and len(state) == 727
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in expected.items())
    assert not any(isinstance(v, nn.Parameter) for v in state.values())
    loaded, fmt = load_checkpoint(path, module_pickle=True)
    assert "pickled model" in fmt and set(loaded) == set(expected)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_a_planted_os_system_is_refused_and_never_runs(tmp_path, xrv_model, legacy):
    marker = tmp_path / "pwned"
    xrv_model.features.plant = _Plant(marker)  # a module tree carrying a callable, as a hostile file would
    path = tmp_path / "hostile.pt"
    torch.save(xrv_model, path, _use_new_zipfile_serialization=not legacy)
    assert any(n.endswith(".system") for n in pickled_globals(path))
    with pytest.raises(UnsafeCheckpointError, match="system") as caught:
        read_module_pickle(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not marker.exists()


def test_a_hidden_global_the_scan_misses_is_still_refused_by_the_unpickler(tmp_path, monkeypatch):
    """Defence in depth: even if the static scan were fooled, the legacy unpickler knows only tensors and stubs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pt"
    torch.save({"w": torch.ones(2), "x": _Plant(marker)}, path, _use_new_zipfile_serialization=False)
    from medtl.weights import module_pickle

    monkeypatch.setattr(module_pickle, "pickled_globals", lambda p: set())
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_module_pickle(path)
    assert not marker.exists()


def test_stubs_ignore_their_arguments_and_keep_only_state():
    stub = ModuleStub("anything", at=1)
    stub.__setstate__(({"_parameters": {}, "x": 1}, None))
    assert stub.state == {"_parameters": {}, "x": 1}
    stub.__setstate__(b"junk")
    assert stub.state == {}
    assert pickle.loads(pickle.dumps({"a": 1})) == {"a": 1}  # the module does not patch pickle globally
