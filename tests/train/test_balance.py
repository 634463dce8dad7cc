"""Class imbalance from the config: inverse-frequency loss weights, or a weighted sampler."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from medtl.config import load_config
from medtl.train.datasets import class_balance, class_weights
from medtl.train.metrics import aggregate_by_scan, classification_metrics


def _cfg(balance: str):
    return load_config(
        {"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}, "train": {"class_balance": balance}}
    )


def test_weighted_loss_and_sampler() -> None:
    labels = [0] * 30 + [1] * 10
    assert class_weights(labels, 2) == pytest.approx([40 / 60, 40 / 20])
    ds = type("DS", (), {"labels": labels, "__len__": lambda self: 40})()
    exp = type("Exp", (), {"config": _cfg("sampler"), "datasets": {"train": ds}})()
    sampler = class_balance(exp)
    drawn = Counter(labels[i] for i in sampler)
    assert abs(drawn[0] - drawn[1]) < 16  # balanced in expectation: 20/20 of 40 draws
    exp.config = _cfg("weighted_loss")
    assert class_balance(exp) is None  # weighted_loss: the task's loss weights, not a sampler


def test_metrics_match_definitions_and_slices_average_per_scan() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    m = classification_metrics(probs, labels, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # AUROC by pair counting: positives (0.8, 0.4, 0.7) vs negatives (0.1, 0.6): 5 of 6 pairs ordered
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    # slices 0,1 of scan 7 and slice 2 of scan 3; a duplicated slice (DDP padding) changes nothing
    p, y, ids = aggregate_by_scan(
        torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.9, 0.1]]),
        torch.tensor([1, 1, 0, 0]),
        torch.tensor([7, 7, 3, 3]),
    )
    assert ids.tolist() == [3, 7] and y.tolist() == [0, 1]
    assert torch.allclose(p, torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
