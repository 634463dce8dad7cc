"""A training config may leave model.arch out when its weights name a source with weights for one architecture."""

from __future__ import annotations

import pytest

from medtl.config import load_config
from medtl.errors import ConfigError


def test_model_arch_comes_from_a_single_arch_source():
    assert load_config({"data": {"manifest": "m.csv"}, "model": {"weights": "ct-fm"}}).model.arch == "segresnet_3d"
    cfg = load_config({"data": {"manifest": "m.csv"}, "model": {"weights": "xrv-densenet121-all"}})
    assert cfg.model.arch == "densenet121"
    assert load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18", "weights": "imagenet"}})


def test_model_arch_is_still_required_for_sources_of_several_architectures():
    with pytest.raises(ConfigError, match="model.arch is missing; it may be left out only when") as caught:
        load_config({"data": {"manifest": "m.csv"}, "model": {"weights": "medicalnet"}})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="model.arch is missing"):
        load_config({"data": {"manifest": "m.csv"}, "model": {}})
