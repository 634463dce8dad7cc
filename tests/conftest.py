"""Test-wide settings (offline hubs, caches the test run owns) and fixtures shared by the model tests."""

from __future__ import annotations

import os
import tempfile

# A missed cache must fail in milliseconds, not retry the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDTL_HOME", tempfile.mkdtemp(prefix="medtl-home-"))
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="medtl-torch-"))
# Patients are split by their keyed pseudonyms. Without a given secret each installation makes its own (in
# MEDTL_HOME), and every test's splits would differ from one clone to the next; the suite fixes it so that each test
# sees the same patients in the same splits everywhere. The tests of the secret itself unset it.
os.environ["MEDTL_ID_SECRET"] = "medtl-test-suite-pseudonym-secret-0001"
os.environ.pop("MEDTL_ID_SECRET_FILE", None)
# Under pytest-xdist (`make test` runs one worker per core) the cores are shared among the workers, as among the
# parallel runs of `compare --parallel`: a run's torch threads (train.threads auto) are its share of the cores, so two
# workers never start more threads than there are cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
if _WORKERS > 1:
    os.environ.setdefault("MEDTL_PARALLEL_RUNS", str(_WORKERS))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers.model_states import torchvision_state  # noqa: E402

torch.set_num_threads(_THREADS)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """MEDTL_HOME and TORCH_HOME in tmp_path, downloads off."""
    homes = {"medtl": tmp_path / "medtl-home", "torch": tmp_path / "torch-home"}
    monkeypatch.setenv("MEDTL_HOME", str(homes["medtl"]))
    monkeypatch.setenv("TORCH_HOME", str(homes["torch"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return homes


@pytest.fixture
def torchvision_file(tmp_path: Path):
    """``torchvision_file(arch)`` writes a plain torchvision state dict and returns (path, state)."""

    def write(arch: str, seed: int = 0, name: str | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
        state = torchvision_state(arch, seed)
        path = tmp_path / (name or f"{arch}-tv.pth")
        torch.save(state, path)
        return path, state

    return write
