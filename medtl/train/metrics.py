"""Classification metrics: one implementation (scikit-learn) for training, ``evaluate``, ``predict`` and ``compare``.

Every number medtl reports — the validation metrics logged each epoch, a run's ``result.json``, ``medtl
evaluate`` and the test metrics of ``compare`` — comes from the functions here, so a run folder and a
comparison report can never disagree on what "AUROC" means.

Why scikit-learn rather than torchmetrics: the metrics are computed once per epoch on all validation
outputs (after slices are averaged into scans), never streamed batch by batch, so torchmetrics' state
machinery buys nothing; ``compare`` works on NumPy arrays read from CSV files; and scikit-learn's
definitions are the reference the tests check against. Its multi-class conventions are also the ones
medtl wants: macro F1 over the classes that occur in the labels or the predictions, balanced accuracy
over the classes that occur in the labels (torchmetrics' macro averages count absent classes as 0).

Definitions (``probs`` is (n, n_classes); the predicted class is the arg-max):

- ``auroc``: two classes: the AUROC of ``probs[:, 1]`` for class 1 (ties count one half). More classes:
  one-vs-rest, unweighted mean over the classes present in the labels (scikit-learn's
  ``multi_class="ovr", average="macro"`` when every class is present). ``nan`` with fewer than two
  classes in the labels.
- ``accuracy``: share of correct arg-max predictions.
- ``balanced_accuracy``: mean recall over the classes present in the labels.
- ``f1``: two classes: F1 of class 1. More classes: macro F1 over the classes present in the labels or
  the predictions (a class absent from both is not averaged in, as it is not for AUROC and balanced
  accuracy). 0 when class 1 is neither predicted nor present.
- ``ece`` (expected calibration error, Guo et al. 2017; lower is better): the probabilities are put in
  :data:`ECE_BINS` (15) equal-width bins, bin ``b`` holding ``(b/15, (b+1)/15]`` (0 goes in the first bin), and
  ``ECE = sum_b n_b / n * |accuracy_b - confidence_b|``. Two classes: the probability of class 1 against
  whether the label is class 1 (the positive class's calibration, as the reliability diagram draws it). More
  classes: the top-label confidence (the largest probability) against whether the arg-max is right.
- ``brier`` (lower is better): two classes: ``mean((p_1 - [y = 1])^2)``, the positive class's squared error
  (0 to 1). More classes: the squared distance between the probability vector and the one-hot label, summed over
  the classes and averaged over the cases (0 to 2; Brier's original definition).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from medtl.errors import TrainingError
from medtl.metric_specs import metrics_for_task

__all__ = [
    "ECE_BINS",
    "METRICS",
    "accuracy",
    "aggregate_by_scan",
    "auroc",
    "balanced_accuracy",
    "binary_auroc",
    "brier",
    "calibration_bins",
    "calibration_target",
    "classification_metrics",
    "compute_metric",
    "ece",
    "f1",
]

#: Equal-width probability bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15


def _arrays(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int class indices and probabilities as a float (n, n_classes) array; tensors accepted."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    y = np.asarray(labels).astype(int).reshape(-1)
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.shape[0] != y.size:
        raise ValueError(f"{y.size} labels but {p.shape[0]} rows of probabilities")
    if p.size and not np.isfinite(p).all():
        bad = int((~np.isfinite(p).all(axis=1)).sum())
        raise TrainingError(
            f"{bad} of {p.shape[0]} predictions hold NaN or infinite probabilities, so no metric can be computed",
            fix="the model's outputs are broken (a non-finite loss or non-finite weights); check the training log",
        )
    return y, p


def binary_auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """AUROC of ``scores`` for the positive labels (ties count one half); ``nan`` when one class is absent."""
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=float).reshape(-1)
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, s))


def auroc(labels: Any, probs: Any) -> float:
    """AUROC: binary for two classes, one-vs-rest macro over the classes present otherwise (see the module)."""
    y, p = _arrays(labels, probs)
    if p.shape[1] == 2:
        return binary_auroc(y == 1, p[:, 1])
    present = [c for c in range(p.shape[1]) if (y == c).any()]
    if len(present) < 2:
        return math.nan
    return float(np.mean([binary_auroc(y == c, p[:, c]) for c in present]))


def accuracy(labels: Any, probs: Any) -> float:
    """Share of correct arg-max predictions; ``nan`` for no cases."""
    y, p = _arrays(labels, probs)
    return float(accuracy_score(y, p.argmax(axis=1))) if y.size else math.nan


def balanced_accuracy(labels: Any, probs: Any) -> float:
    """Mean recall over the classes present in the labels; ``nan`` for no cases."""
    y, p = _arrays(labels, probs)
    if not y.size:
        return math.nan
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": those classes have no recall and are left out, as intended
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, p.argmax(axis=1)))


def f1(labels: Any, probs: Any) -> float:
    """F1 of class 1 for two classes; macro F1 over the classes in the labels or predictions otherwise."""
    y, p = _arrays(labels, probs)
    if not y.size:
        return math.nan
    pred = p.argmax(axis=1)
    if p.shape[1] == 2:
        return float(f1_score(y, pred, labels=[0, 1], pos_label=1, average="binary", zero_division=0.0))
    # without ``labels``, scikit-learn averages over the classes present in labels or predictions
    return float(f1_score(y, pred, average="macro", zero_division=0.0))


def calibration_target(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """What calibration is measured on: ``(confidence, outcome)`` per case. Two classes: the probability of class 1
    and whether the label is class 1; more classes: the largest probability and whether the arg-max is right."""
    y, p = _arrays(labels, probs)
    if p.shape[1] == 2:
        return p[:, 1], (y == 1).astype(float)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(float)


def calibration_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence: ``b`` holds ``(edges[b], edges[b + 1]]`` with ``edges = linspace(0, 1, bins + 1)``
    (the edges as NumPy computes them, so a probability of 0.2 is in the bin that ends at 0.2), and 0 goes in the
    first bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, np.asarray(confidence, dtype=float), side="left") - 1, 0, bins - 1)


def ece(labels: Any, probs: Any) -> float:
    """Expected calibration error over :data:`ECE_BINS` equal-width bins (see the module); ``nan`` for no cases."""
    conf, hit = calibration_target(labels, probs)
    if not conf.size:
        return math.nan
    b = calibration_bins(conf)
    gap = np.bincount(b, weights=hit, minlength=ECE_BINS) - np.bincount(b, weights=conf, minlength=ECE_BINS)
    return float(np.abs(gap).sum() / conf.size)


def brier(labels: Any, probs: Any) -> float:
    """Brier score: the positive class's for two classes, summed over the one-hot vector otherwise (see the
    module); ``nan`` for no cases."""
    y, p = _arrays(labels, probs)
    if not y.size:
        return math.nan
    if p.shape[1] == 2:
        return float(np.mean((p[:, 1] - (y == 1)) ** 2))
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(((p - onehot) ** 2).sum(axis=1)))


#: name -> function(labels, probs) of every classification metric of the registry: each is the function of this
#: module with the metric's name
METRICS: dict[str, Callable[[Any, Any], float]] = {name: globals()[name] for name in metrics_for_task("classification")}


def compute_metric(name: str, labels: Any, probs: Any) -> float:
    """One metric by name on class indices and an (n, n_classes) probability array (or tensors).

    Raises:
        UnknownOptionError: ``name`` is not a metric (the message suggests the closest one).
    """
    from medtl.utils import look_up_option

    return METRICS[look_up_option(name, METRICS, what="metric")](labels, probs)


def aggregate_by_scan(
    probs: torch.Tensor, labels: torch.Tensor, scans: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average the probabilities of samples that belong to the same scan.

    Duplicated samples (a distributed sampler pads with repeats) average to themselves, so they do not
    change the result. Returns ``(probs, labels, scan_ids)`` with one row per scan, sorted by scan id.
    """
    ids, inverse = torch.unique(scans.long(), sorted=True, return_inverse=True)
    n = ids.numel()
    sums = torch.zeros(n, probs.shape[1], dtype=torch.float64).index_add_(0, inverse, probs.double())
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(inverse, dtype=torch.float64))
    out_labels = torch.zeros(n, dtype=torch.long)
    out_labels[inverse] = labels.long()
    return (sums / counts[:, None]).float(), out_labels, ids


def classification_metrics(probs: Any, labels: Any, num_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUROC, F1, ECE, Brier score (defined in the module docstring) and the confusion
    matrix.

    Args:
        probs: (n, num_classes) class probabilities, a tensor or an array.
        labels: n class indices.
        num_classes: the task's number of classes (rows and columns of the confusion matrix).

    Returns:
        ``{"n", <each classification metric of the registry>, "confusion_matrix"}``; AUROC is ``nan`` when the
        labels hold a single class.

    Raises:
        TrainingError: some probabilities are NaN or infinite.
    """
    y, p = _arrays(labels, probs)
    names = metrics_for_task("classification")
    out: dict[str, Any] = {"n": int(y.size)}
    if y.size == 0:
        return out | {k: math.nan for k in names} | {"confusion_matrix": []}
    if p.shape[1] != num_classes:
        raise ValueError(f"probabilities have {p.shape[1]} columns but the task has {num_classes} classes")
    for name in names:
        out[name] = METRICS[name](y, p)
    out["confusion_matrix"] = confusion_matrix(y, p.argmax(axis=1), labels=list(range(num_classes))).tolist()
    return out
