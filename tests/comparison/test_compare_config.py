"""The compare section: the primary metric chooses the checkpoint, arms may differ in augmentation, the CLI reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtl.cli import main
from medtl.comparison.compare_config import (
    CompareConfig,
    arm_config,
    arm_overrides,
    load_any_config,
    load_compare_config,
)
from medtl.config import load_config
from medtl.errors import ConfigError
from medtl.transforms.presets import flip_axes

ROOT = Path(__file__).resolve().parents[2]


def _raw(**compare: object) -> dict:
    return {
        "data": {"manifest": "m.csv"},
        "model": {"arch": "mobilenet_v2"},
        "compare": {
            "arms": [{"name": "imagenet", "model": {"weights": "imagenet"}}, {"name": "scratch"}],
            **compare,
        },
    }


@pytest.mark.parametrize("metric", ["auroc", "accuracy", "balanced_accuracy", "f1"])
def test_the_primary_metric_chooses_the_checkpoint(metric: str) -> None:
    cfg = load_compare_config(_raw(primary_metric=metric))
    assert cfg.experiment.train.monitor == f"val_{metric}"


def test_a_monitor_the_config_sets_is_kept() -> None:
    raw = _raw(primary_metric="accuracy")
    raw["train"] = {"monitor": "val_loss"}
    assert load_compare_config(raw).experiment.train.monitor == "val_loss"
    over = load_compare_config(_raw(primary_metric="accuracy"), {"train.monitor": "val_f1"})
    assert over.experiment.train.monitor == "val_f1"
    # an override of the primary metric moves the checkpoint with it
    moved = load_compare_config(_raw(primary_metric="accuracy"), {"compare.primary_metric": "f1"})
    assert moved.experiment.train.monitor == "val_f1"


def test_arms_may_differ_in_augmentation() -> None:
    raw = _raw()
    raw["augment"] = {"rotate_deg": 5.0}
    raw["compare"]["arms"][1]["augment"] = {"flips": [], "zoom": 0.2}
    cfg = load_compare_config(raw)
    imagenet, scratch = cfg.compare.arms
    assert arm_overrides(imagenet) == {} and arm_overrides(scratch) == {"augment.flips": [], "augment.zoom": 0.2}
    s = arm_config(cfg.experiment, scratch).augment
    assert s.flips == [] and s.zoom == 0.2 and s.rotate_deg == 5.0  # the rest from the experiment
    assert arm_config(cfg.experiment, imagenet).augment.flips == ["left_right"]
    assert flip_axes(arm_config(cfg.experiment, scratch), 2) == []
    # and the runs compare trains for the arm get it
    from medtl.comparison.compare import _run_config
    from medtl.comparison.compare_config import arm_spec

    run = _run_config(cfg.experiment, arm_spec(scratch, cfg.experiment), 0, 1.0, Path("splits.csv"), Path("r/x"))
    assert run.augment.flips == [] and run.augment.zoom == 0.2 and run.augment.rotate_deg == 5.0


def test_a_bad_arm_augment_fails_at_load_naming_the_arm() -> None:
    raw = _raw()
    raw["compare"]["arms"][1]["augment"] = {"flip": ["left_right"]}
    with pytest.raises(ConfigError, match="arm 'scratch'.*augment.flip: unknown field.*did you mean 'flips'"):
        load_compare_config(raw)


@pytest.mark.parametrize("name", ["compare_xray.yaml", "compare_ct.yaml"])
def test_shipped_compare_configs_validate(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "configs" / name
    assert isinstance(load_any_config(path), CompareConfig)
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok (compare " in out and "primary metric auroc, checkpoint on val_auroc" in out
    assert main(["config", "show", str(path), "--set", "compare.primary_metric=accuracy"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["compare"]["primary_metric"] == "accuracy" and shown["train"]["monitor"] == "val_accuracy"
    assert [a["name"] for a in shown["compare"]["arms"]]
    # what show prints (paths made absolute) is itself a valid comparison config
    again = tmp_path / name
    again.write_text(yaml.safe_dump(shown))
    assert load_compare_config(again).compare.primary_metric == "accuracy"


def test_show_fills_in_default_arms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw()
    del raw["compare"]["arms"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["config", "show", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    names = [a["name"] for a in shown["compare"]["arms"]]
    assert "imagenet" in names and names[-1] == "scratch"


def test_compare_section_errors_stay_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(seed=3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "compare.seed: unknown field" in err and "\n" not in err.strip()


def test_an_experiment_config_is_still_an_experiment_config() -> None:
    path = ROOT / "configs" / "xray_mobilenet_imagenet.yaml"
    cfg = load_any_config(path)
    assert cfg == load_config(path) and cfg.augment.flips == ["left_right"]


def test_the_default_folder_of_a_timm_arch_is_one_folder(tmp_path) -> None:
    from medtl.comparison.compare import default_compare_dir
    from medtl.config import load_config

    cfg = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "timm/vit_tiny_patch16_224[img_size=64]"}})
    folder = default_compare_dir(cfg)
    assert folder.parent == cfg.output.dir and folder.name == "compare-timm_vit_tiny_patch16_224_img_size=64_"
