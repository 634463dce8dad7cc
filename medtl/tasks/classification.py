"""Classification: one label per scan, from a list of classes.

Loss: cross-entropy (optional class weights and label smoothing). Metrics (:mod:`medtl.train.metrics`, defined
there): accuracy, balanced accuracy, AUROC, F1, and the confusion matrix. A manifest's ``label`` column holds the
class names; labels that look like another task's (``Nodule|Effusion``, or many distinct numbers such as ages) are
an error that names the rows and points at ``task: multilabel`` or ``task: regression``. ``compare`` averages each
patient's scan probabilities into one unit per (patient, label) (:mod:`medtl.comparison.patients`), resamples
patients within their class, and adds DeLong's test for two-class AUROC and a ROC plot to its report.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.errors import ManifestError, TrainingError
from medtl.tasks.base import Task

__all__ = ["ClassificationTask", "check_label_kind"]

#: how many distinct numeric labels make a column look like a quantity (regression) rather than classes
NUMERIC_CLASSES_LIMIT = 10
_MULTI_SEPARATOR = re.compile(r"[|;]")


def check_label_kind(labels: Sequence[tuple[int, str]], path: Any, *, classes_given: bool = False) -> None:
    """Refuse labels that look like another task's: ``A|B`` lists (multi-label) or many distinct numbers
    (regression). ``labels``: (CSV row, label) pairs.

    Raises:
        ManifestError: naming up to 8 rows and the ``task:`` that fits.
    """
    multi = [(row, lab) for row, lab in labels if _MULTI_SEPARATOR.search(lab)]
    if multi and not classes_given:
        shown = ", ".join(f"row {row} {lab!r}" for row, lab in multi[:8])
        raise ManifestError(
            f"manifest {path}: {len(multi)} label(s) list several findings ({shown}); a classification run would "
            "make each combination a class of its own",
            path=str(path),
            fix="set task: multilabel (a 'labels' column of '|'-separated findings, or one 0/1 column per finding), "
            "or list the classes in data.classes if these are single class names",
        )
    distinct = {lab for _, lab in labels}
    numbers = [lab for lab in distinct if _is_number(lab)]
    if not classes_given and len(numbers) > NUMERIC_CLASSES_LIMIT and len(numbers) == len(distinct):
        rows = ", ".join(str(row) for row, _ in labels[:8])
        raise ManifestError(
            f"manifest {path}: the labels are {len(distinct)} distinct numbers (rows {rows}...); a classification "
            "run would make each value a class of its own",
            path=str(path),
            fix="set task: regression to predict the number, or bin it into named classes (or list them in "
            "data.classes)",
        )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@dataclass
class ClassificationTask(Task):
    """One label per scan, from a list of classes.

    Args:
        classes: class names in index order.
        class_weights: per-class loss weights (None: unweighted).
        label_smoothing: of the cross-entropy.
    """

    classes: list[str]
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    name = "classification"

    # ------------------------------------------------------------------ config and manifest
    @classmethod
    def read_manifest(cls, config: Any, *, check_files: bool = True) -> Any:
        from medtl.data import Manifest

        manifest = Manifest.from_csv(
            config.data.manifest,
            classes=config.data.classes,
            check_files=check_files,
            label_column=config.data.label_column,
            image_column=config.data.image_column,
            patient_column=config.data.patient_column,
        )
        check_label_kind(
            [(r.row, manifest.classes[r.label]) for r in manifest],
            manifest.path,
            classes_given=config.data.classes is not None,
        )
        if len(manifest) and len(manifest.classes) < 2:
            raise TrainingError(
                f"manifest {config.data.manifest} has a single class {list(manifest.classes)}; classification needs "
                "two or more"
            )
        return manifest

    @classmethod
    def from_experiment(cls, config: Any, manifest: Any, pipeline: Any) -> ClassificationTask:
        return cls(list(manifest.classes), label_smoothing=config.train.label_smoothing)

    @classmethod
    def from_state(cls, config: Any, state: dict[str, Any], pipeline: Any) -> ClassificationTask:
        return cls(list(state["classes"]))

    def check_training_split(self, records: Sequence[dict[str, Any]], assignment: dict[str, str], where: str) -> None:
        counts = Counter(int(r["label"]) for r in records if assignment.get(str(r["patient_id"])) == "train")
        missing = [self.classes[i] for i in range(len(self.classes)) if counts.get(i, 0) == 0]
        if missing:
            raise TrainingError(
                f"class(es) {missing} have no training patients in {where} "
                f"(training scans per class: { {self.classes[k]: v for k, v in sorted(counts.items())} }); "
                "add scans of these classes, or lower splits.val_fraction/test_fraction"
            )

    def describe_labels(self, records: Sequence[dict[str, Any]]) -> str:
        counts = Counter(self.classes[int(r["label"])] for r in records)
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))

    def fit(self, experiment: Any) -> None:
        """Inverse-frequency loss weights with ``train.class_balance: weighted_loss``."""
        from medtl.train.datasets import class_weights

        if experiment.config.train.class_balance == "weighted_loss":
            self.class_weights = class_weights(experiment.datasets["train"].labels, len(self.classes))

    # ------------------------------------------------------------------ network
    def make_loss(self) -> nn.Module:
        weight = torch.tensor(self.class_weights, dtype=torch.float32) if self.class_weights else None
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs.float(), targets.long(), reduction="none")

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1)

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        from medtl.train.metrics import classification_metrics

        return classification_metrics(scores, targets, len(self.classes))

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The value logged for ``key``; AUROC falls back on balanced accuracy when one class is present."""
        value = float(metrics[key])
        if key == "auroc" and math.isnan(value):
            value = float(metrics["balanced_accuracy"])
        return value

    # ------------------------------------------------------------------ predictions
    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        return (
            ["image", "patient_id"]
            + (["label"] if with_labels else [])
            + [f"prob_{c}" for c in self.classes]
            + ["pred"]
        )

    def prediction_rows(
        self, records: Sequence[dict[str, Any]], scores: torch.Tensor, scan_ids: torch.Tensor, *, with_labels: bool
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

    @classmethod
    def describe_evaluation(cls, result: dict[str, Any]) -> list[str]:
        lines = super().describe_evaluation(result)
        matrix = f"confusion matrix (rows: true {result['classes']}): {result['confusion_matrix']}"
        return [lines[0], matrix, *lines[1:]]

    @classmethod
    def evaluation_plots(cls, result: dict[str, Any], units: Any, plot_dir: Path) -> dict[str, tuple[str, Path]]:
        """The ROC curve over the evaluated patients (one-vs-rest for more than two classes: the AUROC the metrics
        table shows), and the reliability diagram and confusion matrix of the evaluated scans."""
        from medtl.comparison.plots import plot_confusion, plot_reliability, plot_roc

        classes = list(result.get("classes") or [])
        out: dict[str, tuple[str, Path]] = {}
        if units is not None and len(units):
            n = len({str(p) for p in units.patient_id})
            roc = plot_roc(
                units.labels,
                units.probs,
                classes,
                plot_dir / "roc.png",
                title=f"ROC, {n} patients\n(each patient's scan probabilities averaged)",
            )
            if roc is not None:
                out["roc"] = ("ROC curve (per patient)", roc)
        rows = [
            r for r in result.get("scans") or [] if r.get("split") not in ("train", "val") and r.get("label") in classes
        ]
        if rows:
            y = np.asarray([classes.index(r["label"]) for r in rows])
            probs = np.asarray([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
            what = "the positive class" if len(classes) == 2 else "the top class"
            path = plot_reliability(
                y, probs, plot_dir / "reliability.png", title=f"Reliability, {len(rows)} scans ({what})"
            )
            out["reliability"] = ("Reliability diagram (per scan)", path)
        if result.get("confusion_matrix"):
            path = plot_confusion(
                result["confusion_matrix"],
                classes,
                plot_dir / "confusion.png",
                title=f"Confusion matrix, {result['n']} scans",
            )
            out["confusion"] = ("Confusion matrix (per scan)", path)
        return out

    # ------------------------------------------------------------------ compare
    @classmethod
    def patient_units(cls, run: Any, classes: list[str]) -> Any:
        from medtl.comparison.patients import aggregate_by_patient

        pids, labels, probs = run.read_predictions("test", classes)
        return aggregate_by_patient(pids, labels, probs)

    @classmethod
    def units_from_dict(cls, data: dict[str, Any]) -> Any:
        from medtl.comparison.patients import PatientPredictions

        return PatientPredictions.from_dict(data)

    @classmethod
    def describe_primary(cls, results: Any, summary: Any, same: str) -> str:
        return (
            f"Primary metric: test {summary.spec.label}, computed per patient (each patient's scan probabilities "
            f"averaged) {same}. Classes: {', '.join(results.classes)}."
        )

    @classmethod
    def bootstrap_units(cls) -> str:
        return "patients, not images, stratified by class"

    @classmethod
    def report_plots(cls, results: Any, plot_dir: Path) -> dict[str, tuple[str, Path]]:
        from medtl.comparison.plots import plot_roc_curves

        roc = plot_roc_curves(results, plot_dir / "roc.png")
        return {"roc": ("ROC curves with all the labels", roc)} if roc is not None else {}

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        constant = [
            r for r in runs if len(r.predictions) > 1 and float(np.ptp(r.predictions.probs, axis=0).max()) < 1e-4
        ]
        if not constant:
            return []
        return [
            f"{arm.display}: in {len(constant)} of {len(runs)} runs the model gave every test patient the same "
            "probability, to within 0.0001 (it predicts nothing; typical of a network whose batch-norm statistics "
            "did not settle in a short training). Differences against this arm measure that failure, not the value "
            "of pretraining; train longer or with smaller batches."
        ]
