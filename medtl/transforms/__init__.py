"""MONAI transform pipelines built from an experiment config and the weight source's expected input."""

from __future__ import annotations

from medtl.transforms.presets import (
    AdaptChannels,
    AdaptChannelsd,
    ChannelNormalize,
    ChannelNormalized,
    Guard,
    NormalizationSpec,
    Pipeline,
    build_pipeline,
    default_size,
    modality_from_meta,
    normalization_for,
    unwrap_load_error,
)

__all__ = [
    "AdaptChannels",
    "AdaptChannelsd",
    "ChannelNormalize",
    "ChannelNormalized",
    "Guard",
    "NormalizationSpec",
    "Pipeline",
    "build_pipeline",
    "default_size",
    "modality_from_meta",
    "normalization_for",
    "unwrap_load_error",
]
