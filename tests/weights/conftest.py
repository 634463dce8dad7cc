"""Fixtures for weight tests: a private cache, and checkpoints written in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """MEDTL_HOME and TORCH_HOME in tmp_path, downloads off."""
    homes = {"medtl": tmp_path / "medtl-home", "torch": tmp_path / "torch-home"}
    monkeypatch.setenv("MEDTL_HOME", str(homes["medtl"]))
    monkeypatch.setenv("TORCH_HOME", str(homes["torch"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return homes


def randomize_(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Give norm layers and biases random values (kernels are random already), so that an equality check cannot
    pass by accident and the network still computes finite, non-trivial outputs."""
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point() and value.ndim <= 1:
            if key.endswith(("running_var", "weight")):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            else:
                value.copy_(torch.rand(value.shape, generator=g) * 0.2 - 0.1)
        elif key.endswith("num_batches_tracked"):
            value.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
    return state


def torchvision_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of an untrained torchvision model, with torchvision's keys, randomized."""
    import torchvision

    return randomize_(torchvision.models.get_model(arch, weights=None).state_dict(), seed)


@pytest.fixture
def torchvision_file(tmp_path: Path):
    """``torchvision_file(arch)`` writes a plain torchvision state dict and returns (path, state)."""

    def write(arch: str, seed: int = 0, name: str | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
        state = torchvision_state(arch, seed)
        path = tmp_path / (name or f"{arch}-tv.pth")
        torch.save(state, path)
        return path, state

    return write
