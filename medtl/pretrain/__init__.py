"""Self-supervised pretraining on unlabeled scans: make a pretrained encoder for a modality that has none.

``pretrain(config)`` trains an encoder of any registered architecture with SimCLR (contrastive, on lightly) or
Models Genesis (restoration) and registers it in the weight cache as ``local:<name>``, a weight source like
``imagenet`` or ``medicalnet`` for training and ``compare``.
"""

from __future__ import annotations

from medtl.pretrain.config import PretrainConfig, load_pretrain_config
from medtl.pretrain.local import list_local_sources, local_weight_source, resolve_local_source
from medtl.pretrain.run import PretrainResult, pretrain

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "load_pretrain_config",
    "pretrain",
    "resolve_local_source",
    "local_weight_source",
    "list_local_sources",
]
