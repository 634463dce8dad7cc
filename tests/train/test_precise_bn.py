"""Precise BN: batch-norm statistics re-estimated with the current weights before each validation."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from helpers.tasks import base_config
from torch import nn

from medtl.train import fine_tune
from medtl.train.module import recalibrate_batchnorm


def test_recalibrate_batchnorm_averages_the_batch_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net.eval()
    conv, bn = net[0], net[1]
    weights_before = [p.detach().clone() for p in net.parameters()]
    batches = [torch.randn(5, 1, 8, 8) * s + m for s, m in ((1.0, 0.0), (2.0, 3.0), (0.5, -1.0))]

    used = recalibrate_batchnorm(net, iter(batches), max_batches=2)

    assert used == 2
    with torch.no_grad():
        outs = [conv(x).transpose(0, 1).reshape(4, -1) for x in batches[:2]]
    want_mean = torch.stack([o.mean(1) for o in outs]).mean(0)
    want_var = torch.stack([o.var(1, unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=1e-5)
    assert not net.training and bn.momentum == 0.1  # mode and momentum restored
    for before, after in zip(weights_before, net.parameters(), strict=True):
        assert torch.equal(before, after)


def test_recalibrate_batchnorm_without_batches_keeps_the_statistics() -> None:
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(2.0)
    assert recalibrate_batchnorm(bn, iter([]), max_batches=5) == 0
    assert torch.equal(bn.running_mean, torch.full((3,), 2.0))


def test_scratch_mobilenet_does_not_collapse_to_one_output(xray_task: Path, tmp_path: Path) -> None:
    # A MobileNetV2 trained from scratch for a few steps at a high rate: without precise BN its eval-mode
    # output is nearly the same for every scan, because running statistics lag the fast-moving weights.
    cfg = base_config(
        xray_task,
        tmp_path,
        model={"arch": "mobilenet_v2", "weights": "scratch"},
        preprocess={"size": [32, 32]},
        train={"epochs": 2, "batch_size": 4, "lr": 1e-2},
        output={"name": "mnv2"},
    )
    result = fine_tune(cfg, quiet=True)
    with open(result.run_dir / "predictions_test.csv", newline="") as fh:
        probs = [float(r["prob_positive"]) for r in csv.DictReader(fh)]
    assert len(probs) >= 4
    assert max(probs) - min(probs) > 1e-3, probs
