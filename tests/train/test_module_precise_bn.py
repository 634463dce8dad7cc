"""Precise BN where it reaches a result: the tested checkpoint is recalibrated, and when it runs never changes
the weights training reaches."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.tasks import base_config
from torch.optim.swa_utils import update_bn

from medtl.config import TrainConfig
from medtl.train import fine_tune
from medtl.train.module import untouched_random_state

BN_STATS = ("running_mean", "running_var")


class UpdateBnAtLastValidation(pl.Callback):
    """At the last validation (callbacks run before the module's hook): torch's update_bn over the training
    loader on a copy of the model, with the random state put back so the run itself is not disturbed."""

    def __init__(self) -> None:
        self.stats: dict[str, torch.Tensor] = {}
        self.due: list[bool] = []

    def on_validation_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.due.append(module.precise_bn_due())
        if trainer.current_epoch != trainer.max_epochs - 1:
            return
        loader = trainer.train_dataloader
        model = copy.deepcopy(module.model)
        with untouched_random_state(loader):
            update_bn((b["image"] for b in loader), model)
        self.stats = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(BN_STATS)}


def _run(xray_task: Path, tmp_path: Path, name: str, callbacks: list[Any] | None = None, **train: Any) -> Path:
    cfg = base_config(
        xray_task,
        tmp_path,
        preprocess={"size": [16, 16]},
        augment={"enabled": True},  # shuffling and random flips: the recalibration draws from both
        train={"epochs": 2, "loggers": ["csv"], **train},
        output={"name": name},
    )
    return fine_tune(cfg, quiet=True, callbacks=callbacks).run_dir


def _state(path: Path) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("model."): v
        for k, v in torch.load(path, map_location="cpu", weights_only=True)["state_dict"].items()
    }


def test_select_last_recalibrates_the_tested_checkpoint_with_update_bn_over_the_training_loader(
    xray_task: Path, tmp_path: Path
) -> None:
    spy = UpdateBnAtLastValidation()
    once = _run(xray_task, tmp_path, "once", [spy], select="last")
    assert spy.due == [False, True]  # only the last validation recalibrates
    tested = _state(once / "best.ckpt")  # select last: best.ckpt is the final epoch, the one tested and predicting
    last = _state(once / "last.ckpt")
    assert tested.keys() == last.keys() and all(torch.equal(tested[k], last[k]) for k in tested)
    # the tested checkpoint's BN statistics are update_bn's over the training loader with the final weights
    assert spy.stats
    for key, value in spy.stats.items():
        torch.testing.assert_close(tested[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # two full runs; precise BN itself is tested by default
def test_when_precise_bn_runs_never_changes_the_weights_training_reaches(xray_task: Path, tmp_path: Path) -> None:
    once = _state(_run(xray_task, tmp_path, "once", select="last") / "last.ckpt")
    # recalibrating before every validation (early stopping reads them all; patience never ends the run) reaches
    # the same checkpoint bit for bit: the recalibration's draws of batches, flips and dropout are put back
    every = _state(_run(xray_task, tmp_path, "every", select="last", patience=50) / "last.ckpt")
    assert once.keys() == every.keys()
    assert all(torch.equal(every[k], once[k]) for k in once), "precise BN's timing changed the run"


def _module(**train: Any) -> Any:
    from medtl.models import create_model
    from medtl.tasks.classification import ClassificationTask
    from medtl.train.module import TaskModule

    model = create_model("resnet18", weights="scratch", in_channels=1, num_classes=2, spatial_dims=2)
    return TaskModule(model, ClassificationTask(["a", "b"]), TrainConfig(**train), "one_cycle")


def _trainer(epoch: int, *, early_stopping: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        early_stopping_callbacks=[object()] if early_stopping else [],
        max_epochs=3,
        current_epoch=epoch,
    )


@pytest.mark.parametrize(
    ("train", "early_stopping", "due"),
    [
        ({"select": "best"}, False, [True, True, True]),  # any epoch's checkpoint may be the tested one
        ({"select": "last"}, False, [False, False, True]),  # only the final checkpoint is tested
        ({"select": "last", "patience": 5}, True, [True, True, True]),  # early stopping reads every validation
        ({"select": "best", "precise_bn_batches": 0}, False, [False, False, False]),
        ({"select": "last", "precise_bn_batches": 0}, False, [False, False, False]),
    ],
)
def test_precise_bn_runs_before_the_validations_whose_statistics_reach_a_result(
    train: dict[str, Any], early_stopping: bool, due: list[bool]
) -> None:
    module = _module(**train)
    seen = []
    for epoch in range(3):
        module.trainer = _trainer(epoch, early_stopping=early_stopping)  # type: ignore[assignment]
        seen.append(module.precise_bn_due())
    assert seen == due
