"""Models: an architecture (:mod:`medtl.backbones`) joined with a weight source (:mod:`medtl.weights`).

The layer above both: ``backbones`` knows networks and nothing of weight files, ``weights`` knows sources, files
and tensors and nothing of networks. Here they meet: :func:`create_model`, :func:`load_into` (a state dict into a
network, with a :class:`LoadReport`), :func:`expected_input` (the channels and normalisation the transforms and
the model agree on) and :func:`import_weights` (a file into the cache, checked to fit its architecture).
"""

from __future__ import annotations

from medtl.models.create import ExpectedInput, create_model, expected_input, weight_source_for
from medtl.models.load import LoadReport, check_checkpoint_fits, import_weights, load_into
from medtl.models.model import FeatureInfo, MedtlModel, ParamGroup
from medtl.models.segmentation import SegmentationModel

__all__ = [
    "create_model",
    "weight_source_for",
    "expected_input",
    "ExpectedInput",
    "MedtlModel",
    "SegmentationModel",
    "ParamGroup",
    "FeatureInfo",
    "LoadReport",
    "load_into",
    "check_checkpoint_fits",
    "import_weights",
]
