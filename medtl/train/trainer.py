"""The Lightning Trainer of a run: medtl's callbacks, loggers, strategy and precision from the config."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import torch

from medtl.config import ExperimentConfig
from medtl.errors import ConfigError
from medtl.rundir import RunDir
from medtl.train.experiment import Experiment

__all__ = ["build_trainer", "resolve_precision", "quiet_lightning"]


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on a CUDA GPU, 32-true otherwise."""
    if precision == "auto":
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return "bf16-mixed" if gpu else "32-true"
    return "32-true" if precision == "32" else precision


def _loggers(cfg: ExperimentConfig, run: RunDir) -> list[Any]:
    """Lightning loggers asked for by ``train.loggers`` (metrics.csv is written by medtl itself)."""
    loggers: list[Any] = []
    for name in cfg.train.loggers:
        if name == "csv":
            continue
        try:
            if name == "tensorboard":
                import tensorboard  # noqa: F401
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(save_dir=str(run.path), name="tensorboard", version=""))
            elif name == "mlflow":
                import mlflow  # noqa: F401
                from lightning.pytorch.loggers import MLFlowLogger

                loggers.append(MLFlowLogger(experiment_name="medtl", run_name=run.path.name))
            elif name == "wandb":
                import wandb  # noqa: F401
                from lightning.pytorch.loggers import WandbLogger

                loggers.append(WandbLogger(name=run.path.name, save_dir=str(run.path)))
        except ImportError:
            raise ConfigError(
                f"train.loggers asks for {name!r}, which is not installed",
                fix=f"pip install 'medtl[{name}]', or remove {name!r} from train.loggers",
            ) from None
    return loggers


def build_trainer(
    cfg: ExperimentConfig,
    exp: Experiment,
    run: RunDir,
    *,
    callbacks: list[Any],
    trainer_kwargs: dict[str, Any] | None,
    quiet: bool,
) -> tuple[Any, Any, Any]:
    """The Lightning Trainer of a run, with medtl's callbacks; returns ``(trainer, metrics_cb, best_cb)``."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        EMAWeightAveraging,
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
    )

    from medtl.train.callbacks import AtomicCheckpointIO, LastCheckpoint, MetricsCSV, PlainProgress, RngState

    t = cfg.train
    accelerator = {"cuda": "gpu"}.get(t.accelerator, t.accelerator)
    mode = t.monitor_mode
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    metrics_cb = MetricsCSV(run, ["epoch", "time_s", "train_loss", *(f"val_{k}" for k in exp.task.metric_names), "lr"])
    # best.ckpt: weights only, the checkpoint that is tested and predicts; last.ckpt: full state (optimizer,
    # schedule, RNG) for --resume
    if t.select == "last":
        # the final epoch is the selected one: best.ckpt holds it, so predict uses the weights the run tested (and
        # whose batch-norm statistics precise BN recalibrated). Written at the final epoch only, or each epoch when
        # early stopping may end the run sooner.
        best_cb = ModelCheckpoint(
            dirpath=run.path,
            filename="best",
            monitor=None,
            save_top_k=1,
            save_weights_only=True,
            every_n_epochs=1 if t.patience else t.epochs,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    else:
        best_cb = ModelCheckpoint(
            dirpath=run.path,
            filename="best",
            monitor=t.monitor,
            mode=mode,
            save_top_k=1,
            save_weights_only=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
    last_cb = LastCheckpoint(  # no monitor, top 1: the latest epoch, under a fixed name; then metrics.csv
        metrics_cb,
        dirpath=run.path,
        filename="last",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    cbs: list[Any] = [RngState(exp.datasets["train"]), metrics_cb, best_cb, last_cb]
    if t.patience:
        # a NaN monitor (HD95 while nothing is predicted yet) is no improvement, not a reason to stop at once; a
        # NaN loss is the non-finite policy's business (train.max_nonfinite_steps)
        cbs.append(EarlyStopping(monitor=t.monitor, mode=mode, patience=t.patience, check_finite=False))
    if t.ema_decay:
        cbs.append(EMAWeightAveraging(decay=t.ema_decay))
    tty = sys.stdout.isatty() and not quiet
    if tty:
        cbs.append(RichProgressBar())
    elif not quiet:
        cbs.append(PlainProgress(metrics_cb))
    loggers = _loggers(cfg, run)
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    cbs += callbacks
    strategy: Any = "auto"
    if t.devices * t.num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        # frozen groups have no gradients in the first phase: DDP must not wait for them
        strategy = DDPStrategy(find_unused_parameters=cfg.resolved_schedule() == "fine_tune")
    kwargs: dict[str, Any] = {
        "accelerator": accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": strategy,
        "precision": resolve_precision(t.precision, accelerator),
        "max_epochs": t.epochs,
        "callbacks": cbs,
        "plugins": [AtomicCheckpointIO()],
        "logger": loggers or False,
        "default_root_dir": str(run.path),
        "enable_progress_bar": tty,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "limit_train_batches": t.limit_train_batches,
        "deterministic": t.deterministic,
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "gradient_clip_val": t.gradient_clip_val,
        # torch's SyncBatchNorm runs on CUDA only; CPU processes (tests, gloo) keep per-process statistics
        "sync_batchnorm": t.sync_batchnorm and t.devices * t.num_nodes > 1 and on_gpu,
    }
    kwargs |= trainer_kwargs or {}
    return pl.Trainer(**kwargs), metrics_cb, best_cb


def quiet_lightning() -> None:
    # the run folder holds config and splits before the first checkpoint, by design
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # validation metrics are computed from predictions gathered over all ranks: identical on every rank
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
