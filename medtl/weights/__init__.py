"""Weight sources as records, an offline-first cache, and safe checkpoint loading with a report."""

from __future__ import annotations

from medtl.weights.cache import (
    cache_listing,
    cache_path,
    download,
    import_weights,
    is_cached,
    resolve_weight_file,
    verify_cache,
    weights_dir,
)
from medtl.weights.load import LoadReport, load_checkpoint, load_into, read_checkpoint, unwrap_checkpoint
from medtl.weights.sources import Normalization, WeightFile, WeightSource, get_weight_source, list_weight_sources

__all__ = [
    "WeightSource",
    "WeightFile",
    "Normalization",
    "get_weight_source",
    "list_weight_sources",
    "LoadReport",
    "read_checkpoint",
    "unwrap_checkpoint",
    "load_checkpoint",
    "load_into",
    "weights_dir",
    "cache_path",
    "is_cached",
    "resolve_weight_file",
    "download",
    "import_weights",
    "verify_cache",
    "cache_listing",
]
