"""The LightningModule around a medtl backbone: loss, per-scan validation metrics, fine-tune schedule."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from medtl.train.metrics import aggregate_by_scan, classification_metrics
from medtl.train.schedule import PlanScheduler, group_name, group_params, make_plan, set_frozen

__all__ = ["ClassifierModule", "build_backbone", "recalibrate_batchnorm"]


def build_backbone(arch: str, weights: str, *, in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
    """``medtl.backbones.create_model`` with the experiment's arguments."""
    from medtl.backbones import create_model

    return create_model(
        arch, weights=weights, in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims
    )


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], *, max_batches: int, forward_context: Any = None
) -> int:
    """Re-estimate batch-norm running statistics with the model's current weights (precise BN).

    The running mean and variance are reset, then accumulated as a plain average over up to ``max_batches``
    training batches, as ``torch.optim.swa_utils.update_bn`` does. Weights are untouched.

    Returns:
        The number of batches used (0 when the model has no batch-norm layer).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or max_batches <= 0:
        return 0
    momenta = {m: m.momentum for m in norms}
    saved = {m: (m.running_mean.clone(), m.running_var.clone()) for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    used = 0
    try:
        for x in batches:
            if used >= max_batches:
                break
            with forward_context if forward_context is not None else contextlib.nullcontext():
                model(x)
            used += 1
    finally:
        for m in norms:
            m.momentum = momenta[m]
            if used == 0:
                m.running_mean.copy_(saved[m][0])
                m.running_var.copy_(saved[m][1])
        model.train(was_training)
    return used


class ClassifierModule(pl.LightningModule):
    """Classification of scans (or slices) with a backbone from :func:`medtl.backbones.create_model`.

    Args:
        arch, weights, in_channels, num_classes, spatial_dims: passed to ``create_model``.
        schedule: ``fine_tune`` or ``one_cycle``.
        epochs, lr, weight_decay, freeze_epochs, lr_mult, unfreeze_lr_factor, pct_start: the schedule.
        class_weights: per-class loss weights (None: unweighted).
        label_smoothing: of the cross-entropy.
        precise_bn_batches: training batches used to re-estimate batch-norm statistics before each validation.
        model: an already built backbone (used instead of building one).
    """

    def __init__(
        self,
        *,
        arch: str,
        weights: str,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        schedule: str = "one_cycle",
        epochs: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        freeze_epochs: int = 1,
        lr_mult: float = 10.0,
        unfreeze_lr_factor: float = 0.5,
        pct_start: float = 0.25,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        precise_bn_batches: int = 0,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model or build_backbone(
            arch, weights, in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims
        )
        self.num_classes = num_classes
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        groups = self.model.param_groups()
        self.plan = make_plan(
            schedule,
            epochs=epochs,
            n_groups=len(groups),
            lr=lr,
            freeze_epochs=freeze_epochs,
            lr_mult=lr_mult,
            unfreeze_lr_factor=unfreeze_lr_factor,
        )
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._train_loss_sum = 0.0
        self._train_loss_n = 0
        self.val_metrics: dict[str, Any] = {}
        self.train_loss_epoch = math.nan
        self.apply_phase(0)

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
        groups = self.model.param_groups()
        hp = self.hparams
        param_groups = [
            {"params": group_params(g), "lr": self.plan[0].max_lrs[i], "name": group_name(g, i)}
            for i, g in enumerate(groups)
        ]
        opt = torch.optim.AdamW(param_groups, lr=hp.lr, weight_decay=hp.weight_decay)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else hp.epochs
        steps_per_epoch = max(float(total) / max(self.trainer.max_epochs or hp.epochs, 1), 1.0)
        sched = PlanScheduler(opt, self.plan, steps_per_epoch, pct_start=hp.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # -- steps --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self.apply_phase(self.current_epoch)
        self._train_loss_sum = 0.0
        self._train_loss_n = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss_fn(logits.float(), batch["label"])
        n = int(batch["label"].shape[0])
        self._train_loss_sum += float(loss.detach()) * n
        self._train_loss_n += n
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_validation_start(self) -> None:
        trainer = self.trainer
        # only validations inside fit(): the train loader exists and the weights have just moved
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.hparams.precise_bn_batches:
            return
        loader = trainer.train_dataloader
        if loader is None:
            return
        batches = (batch["image"].to(self.device) for batch in loader)
        recalibrate_batchnorm(
            self.model,
            batches,
            max_batches=self.hparams.precise_bn_batches,
            forward_context=trainer.precision_plugin.forward_context(),
        )
        if trainer.world_size > 1:  # every rank saw its own shard: average the estimates
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                    m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["image"]).float()
        losses = nn.functional.cross_entropy(logits, batch["label"], reduction="none")
        self._val_outputs.append(
            (logits.softmax(-1).detach(), batch["label"].detach(), batch["scan"].detach(), losses.detach())
        )

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            g = self.all_gather(t)
            return g.reshape(-1, *t.shape[1:])
        return t

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        probs = self._gather(torch.cat([o[0] for o in self._val_outputs]))
        labels = self._gather(torch.cat([o[1] for o in self._val_outputs]))
        scans = self._gather(torch.cat([o[2] for o in self._val_outputs]))
        losses = self._gather(torch.cat([o[3] for o in self._val_outputs]))
        self._val_outputs = []
        p, y, _ = aggregate_by_scan(probs.cpu(), labels.cpu(), scans.cpu())
        m = classification_metrics(p, y, self.num_classes)
        m["loss"] = float(losses.float().mean())
        self.val_metrics = m
        if self._train_loss_n:
            total = torch.tensor([self._train_loss_sum, float(self._train_loss_n)], device=self.device)
            if self.trainer.world_size > 1:
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            self.train_loss_epoch = float(total[0] / total[1])
        for key in ("loss", "accuracy", "balanced_accuracy", "auroc", "f1"):
            value = m[key]
            if key == "auroc" and math.isnan(value):
                value = m["balanced_accuracy"]  # a single-class validation set: keep monitoring something
            self.log(f"val_{key}", float(value), prog_bar=key in ("loss", "auroc"), sync_dist=False)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self(batch["image"]).float().softmax(-1)
