"""fastai-style fine-tuning through parameter groups: freezing, discriminative rates, one-cycle.

``fine_tune``: for ``freeze_epochs`` only the head group trains (batch-norm layers of the body keep
training, as fastai does, so the statistics adapt to the new data), with a one-cycle schedule peaking at
``lr``; then everything trains with a second one-cycle whose peak rates grow geometrically from
``lr * unfreeze_lr_factor / lr_mult`` for the stem to ``lr * unfreeze_lr_factor`` for the head.
``one_cycle``: everything trains from the start with one rate (the usual choice for scratch weights).

Freezing sets ``requires_grad`` per parameter group of ``model.param_groups()``, never by matching names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "Phase",
    "one_cycle_factor",
    "discriminative_lrs",
    "make_plan",
    "frozen_throughout",
    "frozen_body_warning",
    "norm_param_ids",
    "set_frozen",
    "PlanScheduler",
]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Phase:
    """Epochs ``[start, end)`` trained with the first ``frozen_groups`` groups frozen and these peak rates."""

    start: int
    end: int
    frozen_groups: int
    max_lrs: tuple[float, ...]


def one_cycle_factor(pct: float, pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e4) -> float:
    """Multiplier of the peak rate at fraction ``pct`` of a cycle: cosine warm-up then cosine annealing."""
    pct = min(max(pct, 0.0), 1.0)
    if pct < pct_start:
        p = pct / pct_start
        lo = 1.0 / div
        return lo + (1.0 - lo) * (1.0 - math.cos(math.pi * p)) / 2.0
    p = (pct - pct_start) / (1.0 - pct_start)
    lo = 1.0 / final_div
    return lo + (1.0 - lo) * (1.0 + math.cos(math.pi * p)) / 2.0


def discriminative_lrs(lr: float, n_groups: int, lr_mult: float) -> list[float]:
    """Peak rates from ``lr / lr_mult`` (stem, group 0) to ``lr`` (head, last group), geometrically spaced."""
    if n_groups <= 1:
        return [lr] * max(n_groups, 1)
    lo = lr / lr_mult
    return [lo * (lr / lo) ** (i / (n_groups - 1)) for i in range(n_groups)]


def make_plan(
    schedule: str,
    *,
    epochs: int,
    n_groups: int,
    lr: float,
    freeze_epochs: int = 1,
    lr_mult: float = 10.0,
    unfreeze_lr_factor: float = 0.5,
) -> list[Phase]:
    """The phases of a schedule (``fine_tune`` or ``one_cycle``)."""
    if schedule == "one_cycle" or n_groups <= 1:
        return [Phase(0, epochs, 0, tuple([lr] * n_groups))]
    if schedule != "fine_tune":
        raise ValueError(f"unknown schedule {schedule!r}; allowed: fine_tune, one_cycle")
    f = min(freeze_epochs, epochs)
    phases = []
    if f > 0:
        # frozen groups keep a rate: their normalisation layers still train (fastai's train_bn)
        phases.append(Phase(0, f, n_groups - 1, tuple([lr] * n_groups)))
    if epochs > f:
        phases.append(Phase(f, epochs, 0, tuple(discriminative_lrs(lr * unfreeze_lr_factor, n_groups, lr_mult))))
    return phases


def frozen_throughout(schedule: str, *, epochs: int, freeze_epochs: int) -> bool:
    """Whether the plan of ``schedule`` keeps the body frozen in every epoch (``fine_tune`` with ``freeze_epochs``
    >= ``epochs``): the run is then a linear probe (head and normalisation layers), never fine-tuning."""
    plan = make_plan(schedule, epochs=epochs, n_groups=2, lr=1.0, freeze_epochs=freeze_epochs)
    return all(phase.frozen_groups > 0 for phase in plan)


def frozen_body_warning(schedule: str, *, epochs: int, freeze_epochs: int) -> str | None:
    """What to tell the user when :func:`frozen_throughout` holds, else None: the one check of a schedule that
    never unfreezes, used by ``medtl train`` (a console warning) and ``compare`` (the console and the report).

    A linear probe is a legitimate experiment (and has no other spelling in the config), so this warns rather than
    refuses; what it must never be is an accident of ``--epochs 1``.
    """
    if not frozen_throughout(schedule, epochs=epochs, freeze_epochs=freeze_epochs):
        return None
    return (
        f"schedule fine_tune keeps the body (every layer but the head) frozen for all {epochs} epoch(s) "
        f"(train.freeze_epochs {freeze_epochs} >= train.epochs {epochs}): only the head and the normalisation layers "
        "train, a linear probe rather than fine-tuning; raise train.epochs above train.freeze_epochs (or lower "
        "train.freeze_epochs) to fine-tune the body"
    )


def norm_param_ids(model: nn.Module) -> set[int]:
    """ids of the affine parameters of normalisation layers (they keep training while the body is frozen)."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, _NORM_TYPES):
            ids.update(id(p) for p in m.parameters(recurse=False))
    return ids


def set_frozen(model: nn.Module, groups: Sequence[Any], n_frozen: int, *, train_norm: bool = True) -> None:
    """Freeze the first ``n_frozen`` parameter groups (normalisation layers excepted) and unfreeze the rest."""
    keep = norm_param_ids(model) if train_norm else set()
    for i, g in enumerate(groups):
        for p in g.params:
            p.requires_grad_(i >= n_frozen or id(p) in keep)


class PlanScheduler(LRScheduler):
    """Per-step learning rates of a list of :class:`Phase`: a one-cycle per phase, per-group peaks.

    Stepped once per optimizer step. In a frozen phase only the normalisation parameters of the frozen
    groups have gradients, so only they move.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        phases: Sequence[Phase],
        steps_per_epoch: float,
        *,
        pct_start: float = 0.25,
        last_epoch: int = -1,
    ) -> None:
        self.phases = list(phases)
        self.steps_per_epoch = float(max(steps_per_epoch, 1e-9))
        self.pct_start = pct_start
        super().__init__(optimizer, last_epoch)

    def phase_at(self, step: int) -> tuple[Phase, float]:
        epoch_pos = step / self.steps_per_epoch
        for ph in self.phases:
            if epoch_pos < ph.end or ph is self.phases[-1]:
                span = max((ph.end - ph.start) * self.steps_per_epoch, 1.0)
                return ph, (step - ph.start * self.steps_per_epoch) / span
        raise AssertionError("unreachable")

    def lrs_at(self, step: int) -> list[float]:
        ph, pct = self.phase_at(step)
        f = one_cycle_factor(pct, self.pct_start)
        return [m * f for m in ph.max_lrs]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self.lrs_at(max(self.last_epoch, 0))

    def state_dict(self) -> dict[str, Any]:
        # primitives only, so checkpoints load with weights_only=True; the plan is rebuilt from the config
        return {
            "last_epoch": self.last_epoch,
            "_step_count": getattr(self, "_step_count", 0),
            "_last_lr": list(getattr(self, "_last_lr", [])),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", 0))
        self._last_lr = list(state_dict.get("_last_lr", []))
        for group, lr in zip(self.optimizer.param_groups, self.lrs_at(max(self.last_epoch, 0)), strict=False):
            group["lr"] = lr
