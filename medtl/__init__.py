"""medtl: transfer learning on medical scans.

DICOM/NIfTI in, a fine-tuned model and an honest pretrained-vs-scratch verdict out. The public API is
re-exported here and imported lazily, so ``import medtl`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # scan I/O
    "read_scan": "medtl.io",
    "inspect_path": "medtl.io",
    "convert": "medtl.io",
    "LoadScan": "medtl.io",
    "LoadScand": "medtl.io",
    # datasets
    "Manifest": "medtl.data",
    "index_tree": "medtl.data",
    # backbones and weights
    "create_model": "medtl.models",
    "list_architectures": "medtl.backbones",
    "get_weight_source": "medtl.weights",
    "list_weight_sources": "medtl.weights",
    # training and evaluation
    "load_config": "medtl.config",
    "fine_tune": "medtl.train",
    "predict": "medtl.train",
    "evaluate": "medtl.train",
    "lr_find": "medtl.train",
    "compare": "medtl.comparison",
    "pretrain": "medtl.pretraining",
    # errors
    "MedtlError": "medtl.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
