"""The one metrics implementation (medtl.train.metrics) against definitions written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtl.errors import TrainingError
from medtl.metric_specs import metrics_for_task
from medtl.train.metrics import classification_metrics, compute_metric

METRIC_NAMES = metrics_for_task("classification")


def pair_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC as the share of (positive, negative) pairs ordered correctly, ties one half."""
    return float(np.mean([[1.0 if p > q else 0.5 if p == q else 0.0 for q in neg] for p in pos]))


def by_hand(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every metric from its definition (see medtl.train.metrics)."""
    c = probs.shape[1]
    pred = probs.argmax(1)
    present = [k for k in range(c) if (labels == k).any()]
    if c == 2:
        auroc = pair_auc(probs[labels == 1, 1], probs[labels == 0, 1])
    else:
        auroc = float(np.mean([pair_auc(probs[labels == k, k], probs[labels != k, k]) for k in present]))
    recalls = [float((pred[labels == k] == k).mean()) for k in present]

    def f1_of(k):
        tp = np.sum((pred == k) & (labels == k))
        fp = np.sum((pred == k) & (labels != k))
        fn = np.sum((pred != k) & (labels == k))
        return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0

    seen = sorted(set(labels.tolist()) | set(pred.tolist()))
    f1 = f1_of(1) if c == 2 else float(np.mean([f1_of(k) for k in seen]))
    # calibration: two classes, the positive class's probability; more, the top-label confidence
    if c == 2:
        conf, hit = probs[:, 1], (labels == 1).astype(float)
        brier = float(np.mean((probs[:, 1] - (labels == 1)) ** 2))
    else:
        conf, hit = probs.max(1), (pred == labels).astype(float)
        brier = float(
            np.mean([sum((probs[i, k] - (labels[i] == k)) ** 2 for k in range(c)) for i in range(len(labels))])
        )
    ece, edges = 0.0, np.linspace(0, 1, 16)
    for b in range(15):  # (edges[b], edges[b + 1]], zero in the first bin
        lo, hi = edges[b], edges[b + 1]
        inside = ((conf > lo) | (b == 0)) & (conf <= hi)
        if inside.any():
            ece += inside.sum() / len(conf) * abs(hit[inside].mean() - conf[inside].mean())
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auroc": auroc,
        "f1": f1,
        "ece": float(ece),
        "brier": brier,
    }


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_metrics_match_their_definitions(n_classes):
    rng = np.random.default_rng(n_classes)
    n = 70
    labels = rng.integers(0, n_classes, n)
    if n_classes == 5:
        labels[labels == 4] = 0  # class 4 is in neither labels nor (mostly) predictions
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), labels] += 1.0
    if n_classes == 5:
        logits[:, 4] = -10.0  # never predicted: absent from both, so not averaged into macro F1
    probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # ties
    expected = by_hand(labels, probs)
    got = classification_metrics(torch.tensor(probs), torch.tensor(labels), n_classes)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
        assert compute_metric(name, labels, probs) == got[name]  # numpy and tensors: the same numbers
    assert got["n"] == n
    cm = np.asarray(got["confusion_matrix"])
    assert (
        cm.shape == (n_classes, n_classes) and cm.sum() == n and np.trace(cm) == int((probs.argmax(1) == labels).sum())
    )


def test_macro_f1_ignores_classes_absent_from_labels_and_predictions():
    # 3 classes in the task, class 2 absent from the test labels and never predicted
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    labels = np.array([0, 1, 1, 1])
    # class 0: tp 1, fp 1 -> 2/3; class 1: tp 2, fn 1 -> 4/5
    assert compute_metric("f1", labels, probs) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert compute_metric("balanced_accuracy", labels, probs) == pytest.approx((1 + 2 / 3) / 2)
    # a class that is predicted but absent from the labels does count (its F1 is 0)
    probs2 = probs.copy()
    probs2[0] = [0.1, 0.0, 0.9]
    # class 0: no tp, fn 1 -> 0; class 1: 4/5 as before... plus class 2: fp 1 -> 0
    f1 = compute_metric("f1", labels, probs2)
    assert f1 == pytest.approx((0 + 4 / 5 + 0) / 3)


def test_multiclass_auroc_one_vs_rest_over_present_classes():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1, 1], 40)
    labels = np.arange(40) % 3  # class 3 absent
    expected = np.mean([pair_auc(probs[labels == k, k], probs[labels != k, k]) for k in range(3)])
    assert compute_metric("auroc", labels, probs) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(compute_metric("auroc", np.zeros(5, int), probs[:5]))
    assert math.isnan(classification_metrics(torch.tensor(probs[:5]), torch.zeros(5, dtype=torch.long), 4)["auroc"])


def test_non_finite_probabilities_are_an_error():
    probs = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")], [0.2, 0.8]])
    with pytest.raises(TrainingError, match="1 of 3 predictions hold NaN"):
        classification_metrics(probs, torch.tensor([0, 1, 1]), 2)


def test_empty_input_gives_nan_metrics():
    m = classification_metrics(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2)
    assert m["n"] == 0 and all(math.isnan(m[k]) for k in METRIC_NAMES) and m["confusion_matrix"] == []


def test_calibration_metrics_of_known_cases():
    """A perfectly calibrated bin has no ECE; a confident wrong answer costs its full confidence."""
    # two classes: p(positive) 0.8 for 5 cases of which 4 are positive: calibrated, ECE 0
    probs = np.array([[0.2, 0.8]] * 5)
    labels = np.array([1, 1, 1, 1, 0])
    assert compute_metric("ece", labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert compute_metric("brier", labels, probs) == pytest.approx((4 * 0.2**2 + 0.8**2) / 5)
    # three classes, one case, 0.9 on the wrong class: top-label confidence 0.9, accuracy 0
    wrong = np.array([[0.9, 0.05, 0.05]])
    assert compute_metric("ece", np.array([1]), wrong) == pytest.approx(0.9)
    assert compute_metric("brier", np.array([1]), wrong) == pytest.approx(0.9**2 + 0.95**2 + 0.05**2)
    # a probability of exactly 1 falls in the last bin, 0 in the first
    assert compute_metric("ece", np.array([1, 0]), np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)
