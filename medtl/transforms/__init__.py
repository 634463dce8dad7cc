"""MONAI transform pipelines built from an experiment config and the weight source's expected input."""

from __future__ import annotations

from medtl.transforms.checks import (
    AdaptChannels,
    AdaptChannelsd,
    ExpectScan,
    ExpectScand,
    Guard,
    default_size,
    modality_class,
    modality_from_meta,
    unwrap_load_error,
)
from medtl.transforms.presets import Pipeline, build_pipeline, channel_stats

__all__ = [
    "AdaptChannels",
    "AdaptChannelsd",
    "ExpectScan",
    "ExpectScand",
    "Guard",
    "Pipeline",
    "build_pipeline",
    "channel_stats",
    "default_size",
    "modality_class",
    "modality_from_meta",
    "unwrap_load_error",
]
