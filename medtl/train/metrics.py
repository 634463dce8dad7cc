"""Per-scan classification metrics from torchmetrics, and slice-to-scan aggregation for 2.5D."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)

__all__ = ["METRIC_NAMES", "aggregate_by_scan", "classification_metrics"]

METRIC_NAMES = ("accuracy", "balanced_accuracy", "auroc", "f1")


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


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall), AUROC, F1 and the confusion matrix.

    Binary tasks: AUROC and F1 of the positive class (index 1, threshold 0.5). More classes: macro
    averages, AUROC one-vs-rest. AUROC is NaN when the labels hold a single class.
    """
    probs = probs.float()
    labels = labels.long()
    out: dict[str, Any] = {"n": int(labels.numel())}
    if labels.numel() == 0:
        return out | {k: math.nan for k in METRIC_NAMES} | {"confusion_matrix": []}
    out["accuracy"] = float(multiclass_accuracy(probs, labels, num_classes=num_classes, average="micro"))
    present = torch.unique(labels)
    # torchmetrics' macro recall counts absent classes as 0: average over the classes that occur
    recall = multiclass_recall(probs, labels, num_classes=num_classes, average="none")
    out["balanced_accuracy"] = float(recall[present].mean())
    if present.numel() < 2:
        out["auroc"] = math.nan
    elif num_classes == 2:
        out["auroc"] = float(binary_auroc(probs[:, 1], labels))
    else:
        out["auroc"] = float(multiclass_auroc(probs, labels, num_classes=num_classes, average="macro"))
    if num_classes == 2:
        out["f1"] = float(binary_f1_score(probs[:, 1], labels))
    else:
        out["f1"] = float(multiclass_f1_score(probs, labels, num_classes=num_classes, average="macro"))
    out["confusion_matrix"] = multiclass_confusion_matrix(probs, labels, num_classes=num_classes).tolist()
    return out
