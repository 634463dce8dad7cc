"""The experiment config: defaults, typos with the field path and allowed values, overrides, relative paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medtl.config import config_to_yaml, load_config
from medtl.errors import ConfigError

MINIMAL = {"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}}


def test_defaults_are_filled_in() -> None:
    cfg = load_config(MINIMAL)
    assert cfg.train.epochs == 10
    assert cfg.train.precision == "auto"
    assert cfg.splits.label_fraction == 1.0
    assert cfg.model.weights == "scratch"
    assert cfg.resolved_schedule() == "one_cycle"
    assert load_config(MINIMAL, {"model.weights": "imagenet"}).resolved_schedule() == "fine_tune"


def test_typo_names_the_field_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({**MINIMAL, "train": {"epoch": 3}})
    msg = str(err.value)
    assert "train.epoch" in msg and "did you mean 'epochs'" in msg and "batch_size" in msg


def test_bad_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.mode: '4d' is not allowed; allowed: 'auto', '2d', '3d' or '2.5d'"):
        load_config({"data": {"manifest": "m.csv", "mode": "4d"}, "model": {"arch": "r"}})


def test_unknown_section_and_missing_required() -> None:
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config({**MINIMAL, "trian": {}})
    with pytest.raises(ConfigError, match=r"model: required field missing"):
        load_config({"data": {"manifest": "m.csv"}})


def test_invalid_values() -> None:
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        load_config({**MINIMAL, "splits": {"val_fraction": 0.6, "test_fraction": 0.5}})
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config({**MINIMAL, "train": {"epochs": 0}})


def test_overrides_and_relative_paths(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sub" / "exp.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(yaml.safe_dump({**MINIMAL, "output": {"dir": "runs"}}))
    cfg = load_config(cfg_file, {"train.epochs": 2, "train": {"batch_size": 4}, "model.weights": None})
    assert cfg.train.epochs == 2 and cfg.train.batch_size == 4
    assert cfg.data.manifest == cfg_file.parent.resolve() / "m.csv"
    assert cfg.output.dir == cfg_file.parent.resolve() / "runs"
    # the resolved YAML round-trips
    again = load_config(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_transform_key_changes_with_preprocessing_only() -> None:
    a = load_config(MINIMAL)
    assert a.transform_key() == load_config(MINIMAL, {"train.epochs": 3}).transform_key()
    assert a.transform_key() != load_config(MINIMAL, {"preprocess.size": [32, 32]}).transform_key()


def test_hd95_and_loss_monitors_are_minimised_the_others_maximised() -> None:
    from medtl.config.sections import TrainConfig

    assert TrainConfig(monitor="val_hd95").monitor_mode == "min"
    assert TrainConfig(monitor="val_loss").monitor_mode == "min"
    assert TrainConfig(monitor="val_dice").monitor_mode == "max"
    assert TrainConfig(monitor="val_auroc").monitor_mode == "max"
    assert TrainConfig(monitor="val_mae").monitor_mode == "min"


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        (["background"], "at least one other class"),
        (["background", "Lung", "lung "], "'Lung' and 'lung '"),
        (["background", "lung", "lung"], "list each class once"),
    ],
)
def test_segmentation_classes_are_distinct_whatever_their_case(classes: list[str], words: str) -> None:
    from medtl.config.sections import SegmentationConfig

    with pytest.raises(ValueError, match=re.escape(words)):
        SegmentationConfig(classes=classes)
