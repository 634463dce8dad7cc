"""fine_tune through parameter groups: the frozen phase leaves the body alone, rates per group are as configured."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from medtl import create_model
from medtl.config import TrainConfig
from medtl.tasks.classification import ClassificationTask
from medtl.train.module import TaskModule
from medtl.train.schedule import PlanScheduler, discriminative_lrs, make_plan, norm_param_ids, one_cycle_factor


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, size: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, size, size, generator=g)
        self.y = torch.arange(n) % 2
        self.x[self.y == 1] += 1.0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": int(self.y[i]), "scan": i}


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_Tensors(), batch_size=8, shuffle=True)


def test_one_cycle_and_discriminative_rates() -> None:
    assert one_cycle_factor(0.0) == pytest.approx(1 / 25)
    assert one_cycle_factor(0.25) == pytest.approx(1.0)
    assert one_cycle_factor(1.0) == pytest.approx(1e-4)
    lrs = discriminative_lrs(1e-2, 5, 100.0)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)  # geometric
    plan = make_plan("fine_tune", epochs=3, n_groups=3, lr=1e-2, freeze_epochs=1, lr_mult=10, unfreeze_lr_factor=0.5)
    assert [(p.start, p.end, p.frozen_groups) for p in plan] == [(0, 1, 2), (1, 3, 0)]
    assert plan[0].max_lrs == (1e-2, 1e-2, 1e-2)  # only normalisation layers of frozen groups have gradients
    assert plan[1].max_lrs == pytest.approx((5e-4, 5e-4 * math.sqrt(10), 5e-3))
    assert make_plan("one_cycle", epochs=3, n_groups=3, lr=1e-3)[0].max_lrs == (1e-3, 1e-3, 1e-3)


class _Record(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.snap: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.snap[trainer.current_epoch] = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def test_fine_tune_freezes_body_then_trains_it_with_per_group_rates() -> None:
    pl.seed_everything(0, verbose=False)
    lr, lr_mult = 1e-2, 100.0
    module = TaskModule(
        create_model("resnet18", weights="scratch", in_channels=1, num_classes=2, spatial_dims=2),
        ClassificationTask(["a", "b"]),
        TrainConfig(epochs=2, lr=lr, freeze_epochs=1, lr_mult=lr_mult, unfreeze_lr_factor=0.5, precise_bn_batches=0),
        "fine_tune",
    )
    model = module.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    norm_ids = norm_param_ids(model)
    body = [names[id(p)] for g in groups[:-1] for p in g.params if id(p) not in norm_ids]
    body_norm = [names[id(p)] for g in groups[:-1] for p in g.params if id(p) in norm_ids]
    head = [names[id(p)] for p in groups[-1].params]
    rec = _Record()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[rec],
    )
    trainer.fit(module, _loader())
    after0 = rec.snap[0]
    # frozen epoch: every non-normalisation body parameter is bit-for-bit unchanged
    assert all(torch.equal(before[n], after0[n]) for n in body)
    # the head and the batch-norm layers (affine parameters and running statistics) did train
    assert all(not torch.equal(before[n], after0[n]) for n in head)
    assert all(not torch.equal(before[n], after0[n]) for n in body_norm)
    assert not torch.equal(before["net.bn1.running_mean"], after0["net.bn1.running_mean"])
    # unfrozen epoch: the body changes
    after1 = rec.snap[1]
    assert sum(not torch.equal(after0[n], after1[n]) for n in body) == len(body)

    # rates: the optimizer's per-group rate at every step is the plan's, and the plan's peaks are the config's
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(sched, PlanScheduler)
    steps_per_epoch = 4
    for step, got in enumerate(rec.lrs):
        assert got == pytest.approx(sched.lrs_at(step))
    peak2 = sched.lrs_at(steps_per_epoch + int(0.25 * steps_per_epoch))
    assert peak2 == pytest.approx(discriminative_lrs(lr * 0.5, len(groups), lr_mult))
    assert sched.lrs_at(int(0.25 * steps_per_epoch))[-1] == pytest.approx(lr)


def test_one_cycle_trains_everything_from_the_start() -> None:
    pl.seed_everything(0, verbose=False)
    module = TaskModule(
        create_model("resnet18", weights="scratch", in_channels=1, num_classes=2, spatial_dims=2),
        ClassificationTask(["a", "b"]),
        TrainConfig(epochs=1, lr=1e-2, precise_bn_batches=0),
        "one_cycle",
    )
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, _loader())
    stem = module.model.param_groups()[0]
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(not torch.equal(before[names[id(p)]], p.detach()) for p in stem.params)
