"""medtl: transfer learning on medical scans.

DICOM/NIfTI in, a fine-tuned model and an honest pretrained-vs-scratch verdict out. The public API is
re-exported here and imported lazily, so ``import medtl`` stays fast.
"""

from __future__ import annotations

from medtl._lazy import lazy_package

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
    "compare": "medtl.comparison.compare",  # the module, not the package: its submodule `compare` has this name
    "pretrain": "medtl.pretraining",
    # errors
    "MedtlError": "medtl.errors",
}

__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS, also=("__version__",))
