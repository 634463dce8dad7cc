"""Trainer options from the config reach Lightning and torch: optimizer, accumulation, clipping, channels_last,
EMA, compile fallback, per-step logging."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from helpers.tasks import base_config

from medtl.config import TrainConfig
from medtl.models import create_model
from medtl.rundir import RunDir
from medtl.tasks.classification import ClassificationTask
from medtl.train import fine_tune
from medtl.train.module import TaskModule


def test_sgd_accumulation_clipping_channels_last_and_ema_in_one_run(xray_task: Path, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    import lightning.pytorch as pl

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            seen["memory_format_ok"] = module.model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            seen["clip"] = trainer.gradient_clip_val

    train = {
        "epochs": 2,
        "batch_size": 4,
        "optimizer": "sgd",
        "momentum": 0.8,
        "accumulate_grad_batches": 3,
        "gradient_clip_val": 0.5,
        "channels_last": True,
        "ema_decay": 0.5,
        "loggers": ["csv", "tensorboard"],
        "precise_bn_batches": 0,
    }
    cfg = base_config(xray_task, tmp_path, preprocess={"size": [16, 16]}, train=train, output={"name": "opts"})
    result = fine_tune(cfg, quiet=True, callbacks=[Spy()])
    last = torch.load(result.run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    group = last["optimizer_states"][0]["param_groups"][0]
    assert group["momentum"] == 0.8 and group["nesterov"] is True  # SGD with Nesterov momentum
    # 12 training scans, batches of 4: 3 batches per epoch, accumulated into 1 optimizer step per epoch
    assert last["global_step"] == 2
    assert seen == {"memory_format_ok": True, "clip": 0.5}
    assert "EMAWeightAveraging" in "".join(last["callbacks"])
    # per-step loss and learning rate in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(result.run_dir / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train_loss" in tags and any(t.startswith("lr-") for t in tags)
    assert len(acc.Scalars("train_loss")) >= 2


def test_compile_falls_back_to_eager_mode_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(model):  # noqa: ANN001, ANN202
        def run(x):  # noqa: ANN001, ANN202
            raise RuntimeError("no C compiler for the inductor backend")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = create_model("resnet18", weights="scratch", in_channels=1, num_classes=2, spatial_dims=2).eval()
    module = TaskModule(model, ClassificationTask(["a", "b"]), TrainConfig(compile=True), "one_cycle")
    module.setup("fit")
    x = torch.rand(2, 1, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = module(x)
    assert any("training in eager mode" in str(w.message) for w in caught)
    assert torch.equal(out, model(x)) and module(x).shape == (2, 2)


def test_default_learning_rates_follow_the_schedule_and_select_last_tests_the_final_epoch(
    xray_task: Path, tmp_path: Path
) -> None:
    assert TrainConfig().lr_for("one_cycle") == 3e-3 and TrainConfig().lr_for("fine_tune") == 1e-3
    assert TrainConfig(lr=0.01).lr_for("one_cycle") == 0.01
    cfg = base_config(
        xray_task,
        tmp_path,
        preprocess={"size": [16, 16]},
        train={"epochs": 2, "select": "last", "monitor": "val_loss", "lr": None, "loggers": ["csv"]},
        output={"name": "last"},
    )
    result = fine_tune(cfg, quiet=True)
    res = RunDir(result.run_dir).read_result()
    assert res["best_epoch"] == 2 and res["best_checkpoint"].endswith("best.ckpt")
    best, last = (
        torch.load(result.run_dir / n, map_location="cpu", weights_only=True) for n in ("best.ckpt", "last.ckpt")
    )
    assert best["epoch"] == last["epoch"] == 1  # the final epoch (0-based), the weights the run tested
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in best["state_dict"].items())
    lrs = [r["lr"] for r in RunDir(result.run_dir).read_metrics()]
    assert max(lrs) <= 3e-3 and max(lrs) > 1e-3  # scratch, one_cycle: peak 3e-3
