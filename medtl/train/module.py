"""The LightningModule around a medtl backbone: the task's loss and metrics, the fine-tune schedule, precise BN."""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from medtl.config import TrainConfig
from medtl.data.dataset import restore_random_states, transform_random_states
from medtl.errors import TrainingError
from medtl.metric_specs import LOSS, default_metric
from medtl.train.schedule import PlanScheduler, make_plan, set_frozen

__all__ = ["TaskModule", "recalibrate_batchnorm", "untouched_random_state"]


def _memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last for a 2D network, channels_last_3d for a 3D one (from its first convolution)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)), None)
    return torch.channels_last_3d if isinstance(conv, nn.Conv3d) else torch.channels_last


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], *, max_batches: int) -> int:
    """Re-estimate batch-norm running statistics with the model's current weights (precise BN).

    ``torch.optim.swa_utils.update_bn`` over up to ``max_batches`` batches: statistics reset, then a plain
    average. Weights are untouched. Run it inside the precision plugin's forward context (one autocast for
    the whole pass) so the statistics are those of the forward passes training and validation make.

    Returns:
        The number of batches used (0 when the model has no batch-norm layer; the statistics are then kept).
    """
    norms = _batchnorms(model)
    if not norms or max_batches <= 0:
        return 0
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms}
    used = 0

    def take() -> Iterable[torch.Tensor]:
        nonlocal used
        for x in itertools.islice(batches, max_batches):
            used += 1
            yield x

    update_bn(take(), model)
    if not used:  # no batch at all: update_bn has reset the statistics; restore them
        for m, (mean, var, n) in saved.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
    return used


@contextlib.contextmanager
def untouched_random_state(loader: Any) -> Iterator[None]:
    """Restore, on leaving, the random state that drawing batches from ``loader`` advances.

    torch's CPU (and CUDA) generators (the shuffling sampler and dropout) and the random transforms of the
    dataset's sample pipeline. Workers of a loader with ``num_workers > 0`` hold their own transform states,
    which cannot be restored from here: with workers, the draws still advance them.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    post = getattr(getattr(loader, "dataset", None), "post", None)
    states = transform_random_states(post) if post is not None else []
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        restore_random_states(states)


class TaskModule(pl.LightningModule):
    """Trains ``model`` on ``task`` with the schedule of ``train``.

    Args:
        model: a backbone from :func:`medtl.create_model` (it offers ``param_groups()``).
        task: a :class:`~medtl.tasks.base.Task` (loss, metrics, per-scan aggregation).
        train: the config's ``train`` section.
        schedule: ``fine_tune`` or ``one_cycle`` (resolved from ``auto``).
        batch_augment: the geometric augmentation applied to each training batch on its device
            (``augment.device: gpu``; :func:`medtl.transforms.batch.batch_augmentation`), or None.
    """

    def __init__(
        self, model: nn.Module, task: Any, train: TrainConfig, schedule: str, *, batch_augment: Any = None
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.cfg = train
        self.schedule = schedule
        self.batch_augment = batch_augment
        self.loss_fn = task.make_loss()
        self.plan = make_plan(
            schedule,
            epochs=train.epochs,
            n_groups=len(model.param_groups()),
            lr=train.lr_for(schedule),
            freeze_epochs=train.freeze_epochs,
            lr_mult=train.lr_mult,
            unfreeze_lr_factor=train.unfreeze_lr_factor,
        )
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []
        self._train_loss = torch.zeros(2, dtype=torch.float64)  # sum, count
        self._nonfinite_steps = 0
        self.val_metrics: dict[str, Any] = {}
        self.train_loss_epoch = math.nan
        self.memory_format = _memory_format(model) if train.channels_last else None
        self._compiled: Any = None
        self._compile_ok = False
        # No freezing here: DDP registers for gradient reduction only the parameters that require gradients
        # when it wraps the model. The phase is applied at each epoch start, after wrapping.

    # -- schedule -----------------------------------------------------------------------------------
    def phase_for_epoch(self, epoch: int) -> int:
        for i, ph in enumerate(self.plan):
            if ph.start <= epoch < ph.end:
                return i
        return len(self.plan) - 1

    def apply_phase(self, epoch: int) -> None:
        """Freeze or unfreeze the groups as the schedule says for ``epoch`` (normalisation layers keep training)."""
        ph = self.plan[self.phase_for_epoch(epoch)]
        set_frozen(self.model, self.model.param_groups(), ph.frozen_groups)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.cfg
        param_groups = [
            {"params": list(g.params), "lr": self.plan[0].max_lrs[i], "name": g.name}
            for i, g in enumerate(self.model.param_groups())
        ]
        if cfg.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                param_groups,
                lr=self.plan[0].max_lrs[-1],
                momentum=cfg.momentum,
                nesterov=cfg.momentum > 0,
                weight_decay=cfg.weight_decay,
            )
        else:
            opt = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else cfg.epochs
        steps_per_epoch = max(float(total) / max(self.trainer.max_epochs or cfg.epochs, 1), 1.0)
        sched = PlanScheduler(opt, self.plan, steps_per_epoch, pct_start=cfg.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # -- steps --------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)
        if self.cfg.compile and self._compiled is None:
            self._compiled = torch.compile(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        if self._compiled is None:
            return self.model(x)
        if self._compile_ok:
            return self._compiled(x)
        try:  # the first call compiles: a missing compiler or backend falls back on eager mode
            out = self._compiled(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; eager mode then shows real errors
            warnings.warn(
                f"train.compile: torch.compile failed ({type(exc).__name__}: {exc}); training in eager mode",
                stacklevel=2,
            )
            self._compiled = None
            return self.model(x)
        self._compile_ok = True
        return out

    # -- batch-side augmentation (augment.device: gpu) -----------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches, once on the training device, get the geometric augmentation the samples were spared."""
        if self.batch_augment is not None and self._trainer is not None and self.trainer.training:
            return self.batch_augment(batch)
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.batch_augment is not None:  # a resumed run draws on as an uninterrupted one
            checkpoint["batch_augment"] = self.batch_augment.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.batch_augment is not None and "batch_augment" in checkpoint:
            self.batch_augment.load_state_dict(checkpoint["batch_augment"])

    def on_train_epoch_start(self) -> None:
        self.apply_phase(self.current_epoch)
        self._train_loss = torch.zeros(2, dtype=torch.float64)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        target = self.task.target(batch)
        loss = self.loss_fn(self(batch["image"]).float(), target)
        if not torch.isfinite(loss):
            self._nonfinite_steps += 1
            if self._nonfinite_steps > self.cfg.max_nonfinite_steps:
                raise TrainingError(
                    f"the training loss is {float(loss)} at epoch {self.current_epoch + 1}, batch {batch_idx} "
                    f"({self._nonfinite_steps} non-finite step(s); train.max_nonfinite_steps is "
                    f"{self.cfg.max_nonfinite_steps})",
                    fix="lower train.lr, check the inputs and weights, or raise train.max_nonfinite_steps",
                )
            return None  # Lightning skips the backward pass and the optimizer step
        n = int(target.shape[0])
        self._train_loss += torch.tensor([float(loss.detach()) * n, n], dtype=torch.float64)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def precise_bn_due(self) -> bool:
        """Whether the coming validation recalibrates batch-norm statistics first (precise BN).

        Only where the statistics reach a result. A checkpoint is written right after each validation with the
        statistics that validation used. With ``train.select: best`` any epoch's checkpoint may be the one tested,
        and the monitor compares validations, so every validation recalibrates; early stopping also reads every
        validation. Otherwise (``select: last``, no early stopping) only the last epoch's checkpoint is tested and
        predicts, so only the last validation recalibrates: the earlier ones are progress reports, computed with
        the running statistics (which lag the weights in the first epochs of a scratch run). Recalibrating
        before every validation cost 2.7 CPU s per epoch on the MNI benchmark, half of a plain loop's whole
        epoch (benchmarks/README.md); once per run it costs one forward pass over those batches.
        """
        trainer = self.trainer
        # only validations inside fit(): the train loader exists and the weights have just moved
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.cfg.precise_bn_batches:
            return False
        if self.cfg.select == "best" or trainer.early_stopping_callbacks:
            return True
        return trainer.max_epochs is None or trainer.max_epochs < 0 or self.current_epoch >= trainer.max_epochs - 1

    def on_validation_start(self) -> None:
        trainer = self.trainer
        if not self.precise_bn_due():
            return
        loader = trainer.train_dataloader
        if loader is None:
            return

        def images() -> Iterable[torch.Tensor]:
            # the batches are made outside autocast: augmentation in this process must not compute in bf16
            it = iter(loader)
            while True:
                with torch.autocast(self.device.type, enabled=False):
                    batch = next(it, None)
                    if batch is not None and self.batch_augment is not None:  # as training sees them
                        batch = self.batch_augment({"image": batch["image"].to(self.device)})
                if batch is None:
                    return
                yield batch["image"].to(self.device)

        # the recalibration draws batches (shuffling, augmentation, dropout) from the generators training uses:
        # put them back, so that whether and when it runs never changes the weights training reaches
        batch_draws = self.batch_augment.untouched() if self.batch_augment is not None else contextlib.nullcontext()
        with untouched_random_state(loader), batch_draws, trainer.precision_plugin.forward_context():
            recalibrate_batchnorm(self.model, images(), max_batches=self.cfg.precise_bn_batches)
        if trainer.world_size > 1:  # every rank saw its own shard: average the estimates
            for m in _batchnorms(self.model):
                m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val_outputs.append(tuple(t.detach() for t in self.task.evaluate_batch(self, batch)))

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            return self.all_gather(t).reshape(-1, *t.shape[1:])
        return t

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        scores, targets, scans, losses = (
            self._gather(torch.cat(parts)) for parts in zip(*self._val_outputs, strict=True)
        )
        self._val_outputs = []
        s, y, _ = self.task.per_scan(scores.cpu(), targets.cpu(), scans.cpu())
        m = self.task.metrics(s, y)
        m["loss"] = float(losses.float().mean())
        self.val_metrics = m
        total = self._train_loss.to(self.device)
        if self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
        if float(total[1]) > 0:
            self.train_loss_epoch = float(total[0] / total[1])
        shown = (LOSS.name, default_metric(self.task.name))
        for key in self.task.metric_names:
            value = self.task.monitor_value(m, key)
            self.log(f"val_{key}", value, prog_bar=key in shown, sync_dist=False)
