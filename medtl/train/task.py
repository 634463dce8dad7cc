"""The task seam: what differs between classification and segmentation (and, later, regression).

A :class:`Task` says what the network outputs, its loss, the metrics that are logged and monitored, how
per-sample outputs become per-scan results (2.5D slices are averaged), and how predictions are written.
The engine (:mod:`medtl.train.module`, :mod:`medtl.train.run`, :mod:`medtl.train.inference`) calls only these
methods, so a new task plugs in without touching it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from medtl.train.metrics import METRIC_NAMES, aggregate_by_scan, classification_metrics

__all__ = ["Task", "ClassificationTask"]


class Task(Protocol):
    """What the engine needs to know about a task."""

    name: str
    classes: list[str]

    @property
    def num_outputs(self) -> int:
        """Channels of the network's output (the head size)."""

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Metrics computed on validation and test, logged as ``val_<name>``."""

    def make_loss(self) -> nn.Module:
        """The training loss, called as ``loss(outputs, targets)``."""

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        """The training target in a batch."""

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs to the scores that are aggregated and written (probabilities)."""

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample scores to one row per scan: ``(scores, targets, scan_ids)``."""

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Metrics of per-scan scores (NaN where undefined)."""

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        """Columns of a predictions CSV."""

    def prediction_rows(
        self,
        records: Sequence[dict[str, Any]],
        scores: torch.Tensor,
        scan_ids: torch.Tensor,
        *,
        with_labels: bool,
    ) -> list[dict[str, Any]]:
        """One dict per scan, keyed by :meth:`prediction_columns`."""

    def write_extras(self, run: Any, model: nn.Module, dataset: Any, records: Sequence[dict[str, Any]]) -> None:
        """Write what the task adds to a finished run folder besides the predictions (e.g. overlay PNGs)."""


@dataclass
class ClassificationTask:
    """One label per scan, from a list of classes.

    Args:
        classes: class names in index order.
        class_weights: per-class loss weights (None: unweighted).
        label_smoothing: of the cross-entropy.
    """

    classes: list[str]
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    name: str = "classification"

    @property
    def num_outputs(self) -> int:
        return len(self.classes)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", *METRIC_NAMES)

    def make_loss(self) -> nn.Module:
        weight = torch.tensor(self.class_weights, dtype=torch.float32) if self.class_weights else None
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["label"]

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Unweighted per-sample loss (the validation loss)."""
        return nn.functional.cross_entropy(outputs.float(), targets, reduction="none")

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1)

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return aggregate_by_scan(scores, targets, scans)

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return classification_metrics(scores, targets, len(self.classes))

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The value logged for ``key``; AUROC falls back on balanced accuracy when one class is present."""
        value = float(metrics[key])
        if key == "auroc" and math.isnan(value):
            value = float(metrics["balanced_accuracy"])
        return value

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        return (
            ["image", "patient_id"]
            + (["label"] if with_labels else [])
            + [f"prob_{c}" for c in self.classes]
            + ["pred"]
        )

    def prediction_rows(
        self,
        records: Sequence[dict[str, Any]],
        scores: torch.Tensor,
        scan_ids: torch.Tensor,
        *,
        with_labels: bool,
    ) -> list[dict[str, Any]]:
        rows = []
        for probs, sid in zip(scores.tolist(), scan_ids.tolist(), strict=True):
            r = records[sid]
            row: dict[str, Any] = {"image": str(r["image"]), "patient_id": r.get("patient_id", "")}
            if with_labels:
                row["label"] = r.get("label_name") or self.classes[int(r["label"])]
            row.update({f"prob_{c}": float(p) for c, p in zip(self.classes, probs, strict=True)})
            row["pred"] = self.classes[int(np.argmax(probs))]
            rows.append(row)
        return rows

    def write_extras(self, run: Any, model: nn.Module, dataset: Any, records: Sequence[dict[str, Any]]) -> None:
        """Nothing besides the predictions."""
