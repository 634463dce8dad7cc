"""Self-supervised pretraining on unlabeled scans: make a pretrained encoder for a modality that has none.

``pretrain(config)`` trains an encoder of any registered architecture with SimCLR (contrastive, on lightly) or
Models Genesis (restoration) and registers it in the weight cache as ``local:<name>``, a weight source like
``imagenet`` or ``medicalnet`` for training and ``compare``. Names are imported lazily, so the weight-source
registry can read :mod:`medtl.weights.local` without importing the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "pretrain": "medtl.pretraining.run",
    "PretrainResult": "medtl.pretraining.run",
    "PretrainConfig": "medtl.pretraining.config",
    "load_pretrain_config": "medtl.pretraining.config",
    "resolve_local_source": "medtl.weights.local",
    "local_weight_source": "medtl.weights.local",
    "list_local_sources": "medtl.weights.local",
    "register_local_source": "medtl.weights.local",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medtl.pretraining' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
