"""Test-wide settings: offline hubs, and caches the test run owns."""

from __future__ import annotations

import os
import tempfile

# A missed cache must fail in milliseconds, not retry the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDTL_HOME", tempfile.mkdtemp(prefix="medtl-home-"))
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="medtl-torch-"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
