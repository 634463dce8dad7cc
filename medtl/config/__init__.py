"""The experiment config: one YAML file describes data, splits, preprocessing, backbone, training and output.

Parsed into pydantic models with ``extra="forbid"``, so a typo fails with the path to the field and the allowed
values instead of being silently ignored. Every field has a documented default where one makes sense; only
``data.manifest`` and ``model.arch`` are required. Relative paths in a YAML file are relative to that file.

Example::

    data:
      manifest: ../sample_data/xray/manifest.csv
    model:
      arch: mobilenet_v2
      weights: imagenet
    train:
      epochs: 5
"""

from __future__ import annotations

from medtl.config.loading import (
    apply_overrides,
    config_to_yaml,
    load_config,
    read_config_file,
    resolve_config_paths,
    resolve_relative_path,
)
from medtl.config.sections import (
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OutputConfig,
    PreprocessConfig,
    SegmentationConfig,
    SplitsConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "SplitsConfig",
    "PreprocessConfig",
    "AugmentConfig",
    "ModelConfig",
    "TrainConfig",
    "OutputConfig",
    "SegmentationConfig",
    "ExperimentConfig",
    "load_config",
    "read_config_file",
    "resolve_config_paths",
    "resolve_relative_path",
    "config_to_yaml",
    "apply_overrides",
]
