"""Self-supervised pretraining on unlabeled scans: make a pretrained encoder for a modality that has none.

``pretrain(config)`` trains an encoder of any registered architecture with SimCLR (contrastive, on lightly) or
Models Genesis (restoration) and registers it in the weight cache as ``local:<name>``, a weight source like
``imagenet`` or ``medicalnet`` for training and ``compare``. Names are imported lazily, so the weight-source
registry can read :mod:`medtl.weights.local` without importing the training stack.
"""

from __future__ import annotations

from medtl._lazy import lazy_package

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

__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS)
