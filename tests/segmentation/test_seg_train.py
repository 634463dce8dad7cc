"""fine_tune on a segmentation config: a learnable task is learned, and the run folder is a normal one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.seg_tasks import seg_config

from medtl.rundir import RunDir
from medtl.train.run import fine_tune


@pytest.mark.slow  # 157 s on 2 shared cores under load
def test_a_learnable_disc_task_reaches_dice_0_8_and_writes_a_run_folder(disc_task: Path, tmp_path: Path) -> None:
    # 12 training images of 32x32 (a bright disc of radius 4-9 pixels on noise), ResNet-18 from scratch, 6 epochs:
    # measured val Dice 0.94, test Dice 0.94 (a model that predicts nothing scores 0 on every scan)
    cfg = seg_config(disc_task, tmp_path, train={"epochs": 6})
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    val, test = result.metrics["val"], result.metrics["test"]
    assert val["n"] == 6 and test["n"] == 6
    assert val["dice"] >= 0.8 and test["dice"] >= 0.8, (val, test)
    assert 0.0 <= val["hd95"] < 3.0 and val["surface_dice"] >= 0.8
    run = RunDir(result.run_dir)
    assert run.read_result()["status"] == "ok" and run.read_result()["task"] == "segmentation"
    epochs = run.read_metrics()
    assert len(epochs) == 6 and all("val_dice" in row for row in epochs)
    assert epochs[-1]["val_dice"] > epochs[0]["val_dice"]
    rows = list(csv.DictReader(open(run.predictions_file("test"))))
    assert len(rows) == 6 and {"image", "mask", "dice_disc", "hd95_disc", "surface_dice_disc"} <= set(rows[0])
    mean = sum(float(r["dice_disc"]) for r in rows) / len(rows)
    assert abs(mean - test["dice"]) < 1e-6  # the CSV holds the per-scan values the summary averages
    pre = run.read_preprocessing()
    assert pre["task"] == "segmentation" and pre["classes"] == ["background", "disc"]
    card = run.read_text(RunDir.CARD)
    assert "| test | disc | 6 |" in card
    splits = list(csv.DictReader(open(run.file(RunDir.SPLITS))))
    assert {r["label"] for r in splits} == {"big", "small"}
