"""Weight sources as records, an offline-first cache with hash checks, and safe checkpoint reading.

This package knows files and tensors, not networks: matching a checkpoint to an architecture is
:mod:`medtl.models`.
"""

from __future__ import annotations

from medtl.weights.cache import (
    add_to_cache,
    cache_listing,
    cache_path,
    download,
    is_cached,
    resolve_weight_file,
    sha256_file,
    weights_dir,
)
from medtl.weights.load import check_finite, load_checkpoint, read_checkpoint, unwrap_checkpoint
from medtl.weights.sources import (
    Normalization,
    WeightFile,
    WeightSource,
    get_weight_source,
    is_weight_file_path,
    list_weight_sources,
    sources_for_arch,
)
from medtl.weights.verify import FileCheck, check_weight_file, verify_cache

__all__ = [
    "WeightSource",
    "WeightFile",
    "Normalization",
    "get_weight_source",
    "list_weight_sources",
    "is_weight_file_path",
    "sources_for_arch",
    "read_checkpoint",
    "unwrap_checkpoint",
    "check_finite",
    "load_checkpoint",
    "weights_dir",
    "cache_path",
    "is_cached",
    "resolve_weight_file",
    "download",
    "add_to_cache",
    "sha256_file",
    "check_weight_file",
    "FileCheck",
    "verify_cache",
    "cache_listing",
]
