"""``local:<name>`` as a weight source wherever a source name is accepted (model, experiment, compare)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import medtl
from medtl.pretraining import list_local_sources, register_local_source
from medtl.pretraining.run import encoder_state


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """An encoder registered as local:enc without training: a random headless resnet18, 1 channel."""
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    model = medtl.create_model("resnet18", in_channels=1, num_classes=0)
    state = encoder_state(model)
    save_file(state, str(tmp_path / "enc.safetensors"))
    record = {
        "method": "simclr",
        "method_label": "SimCLR",
        "arch": "resnet18",
        "spatial_dims": 2,
        "in_channels": 1,
        "normalization": {"kind": "none", "mean": None, "std": None},
        "epochs": 3,
        "started_from": "scratch",
        "data": {"manifest_sha256": "0" * 64, "n_scans": 10, "n_patients": 9},
    }
    register_local_source("enc", tmp_path / "enc.safetensors", record)
    assert list_local_sources() == ["local:enc"]
    return state


def test_local_name_works_as_model_weights(registered: dict[str, torch.Tensor]) -> None:
    from medtl.models import expected_input
    from medtl.weights.sources import get_weight_source

    source = get_weight_source("local:enc")
    assert source.name == "local:enc" and source.in_channels == 1 and source.dims == 2
    assert "10 unlabeled scans" in source.description
    expected = expected_input("local:enc", "resnet18")
    assert expected.in_channels == 1 and expected.normalization.kind == "none"
    model = medtl.create_model("resnet18", weights="local:enc", num_classes=2)
    assert set(model.load_report.matched) == set(registered)
    state = model.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in registered.items())
