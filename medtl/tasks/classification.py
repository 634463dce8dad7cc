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

__all__ = ["ClassificationTask", "check_label_kind", "log_odds"]

#: test patients whose first scan a run draws a saliency map of (``saliency/`` in the run folder)
SALIENCY_PATIENTS = 3
#: the run folder's folder of saliency PNGs, and its reliability diagram
SALIENCY_DIR = "saliency"
RELIABILITY_PNG = "reliability.png"
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


def log_odds(logits: torch.Tensor, index: int) -> torch.Tensor:
    """Log-odds of class ``index`` from logits ``(B, classes)``: ``logit_k - logsumexp(logit_j, j != k)`` (two
    classes: the difference of the two logits)."""
    others = torch.cat([logits[:, :index], logits[:, index + 1 :]], dim=1)
    return logits[:, index] - torch.logsumexp(others, dim=1)


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
        temperature: every logit is divided by it before the softmax (``train.calibrate: temperature`` fits it on
            the validation patients after training; 1: the network's own probabilities).
        calibration: what that fit did, for the run's result.json (None: no fit).
    """

    classes: list[str]
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    temperature: float = 1.0
    calibration: dict[str, Any] | None = None
    name = "classification"
    calibrations = ("none", "temperature")
    #: ``predict --saliency [METHOD]`` (and ``--saliency-class NAME``): heat maps of where the model looks
    predict_options = ("saliency", "saliency_class")

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
        return cls(list(state["classes"]), temperature=float(state.get("temperature", 1.0)))

    def state(self) -> dict[str, Any]:
        """Classes, and the temperature when one was fitted (predict and evaluate divide the logits by it)."""
        return super().state() | ({"temperature": self.temperature} if self.calibration is not None else {})

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
        """Class probabilities: ``softmax(logits / temperature)``."""
        return (outputs.float() / self.temperature).softmax(-1)

    def calibrate(self, experiment: Any, model: nn.Module, *, device: str, precision: str) -> None:
        """``train.calibrate: temperature``: fit one temperature on the validation scans' logits
        (:func:`medtl.train.calibration.fit_temperature`), and record the validation ECE and negative
        log-likelihood before and after (per scan, as the metrics are computed) for result.json."""
        from medtl.train.calibration import collect_logits, fit_temperature, nll
        from medtl.train.metrics import ece

        if experiment.config.train.calibrate != "temperature":
            return
        if not experiment.splits["val"]:
            self.calibration = {"method": "temperature", "temperature": 1.0, "note": "no validation scans: not fitted"}
            return
        logits, targets, scans = collect_logits(
            model,
            experiment.datasets["val"],
            self.target,
            batch_size=experiment.config.train.batch_size,
            device=device,
            precision=precision,
        )
        self.temperature = 1.0

        def val_ece() -> float:
            probs, labels, _ = self.per_scan(self.outputs_to_scores(logits), targets, scans)
            return ece(labels, probs)

        before, nll_before = val_ece(), nll(logits, targets)
        self.temperature = fit_temperature(logits, targets)
        errors = int((logits.argmax(1) != targets.long()).sum())
        self.calibration = {
            "method": "temperature",
            "temperature": self.temperature,
            "val_ece_before": before,
            "val_ece_after": val_ece(),
            "val_nll_before": nll_before,
            "val_nll_after": nll(logits, targets, self.temperature),
            "n_val_samples": int(targets.numel()),
            "n_val_errors": errors,
        }
        if errors == 0:
            self.calibration["note"] = (
                "every validation sample was predicted right, so the likelihood only rewards surer probabilities: "
                "the temperature sharpens them; more validation patients give a temperature that can also soften"
            )

    def result_extras(self) -> dict[str, Any]:
        """The temperature fit (``calibration``), when ``train.calibrate`` asked for one."""
        return {"calibration": self.calibration} if self.calibration is not None else {}

    def write_extras(self, run: Any, model: nn.Module, dataset: Any, records: Sequence[dict[str, Any]]) -> None:
        """``reliability.png``, the reliability diagram of the run's test predictions
        (:func:`medtl.comparison.plots.plot_reliability`, in the 15 bins of the ECE), and
        ``saliency/<scan>_saliency.png`` (Grad-CAM of the predicted class, :func:`medtl.train.saliency.write_saliency`)
        for the first scan of each of the first :data:`SALIENCY_PATIENTS` test patients, the same patients in every
        run of a comparison (its report shows them side by side). 2.5D runs have no saliency maps."""
        from medtl.comparison.plots import plot_reliability
        from medtl.train.metrics import ECE_BINS
        from medtl.train.saliency import write_saliency

        _, labels, probs = run.read_predictions("test", self.classes)
        if labels:
            plot_reliability(
                np.asarray(labels),
                probs,
                run.path / RELIABILITY_PNG,
                n_bins=ECE_BINS,
                title=f"Test reliability, {len(labels)} scans"
                + (f" (temperature {self.temperature:.2f})" if self.calibration else ""),
            )
        if dataset.mode == "2.5d" or not records:
            return
        first: dict[str, dict[str, Any]] = {}
        for r in records:
            first.setdefault(str(r.get("patient_id", r["image"])), r)
            if len(first) == SALIENCY_PATIENTS:
                break
        param = next(model.parameters(), None)
        try:
            write_saliency(
                model,
                self,
                run.read_config(),
                dataset.pipeline,
                list(first.values()),
                run.path / SALIENCY_DIR,
                device=param.device if param is not None else "cpu",
                nifti=False,
            )
        except Exception as exc:  # noqa: BLE001 - pictures of a finished run must not fail the run
            import warnings

            first_line = " ".join(str(exc).split())[:300]
            warnings.warn(
                f"run {run.path}: no saliency maps ({type(exc).__name__}: {first_line}); `medtl predict RUN SCANS "
                "--saliency gradcam` draws them for given scans",
                stacklevel=2,
            )

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

    def saliency(self, explainer: Any, image: torch.Tensor, *, target: str | None = None) -> tuple[torch.Tensor, str]:
        """The map of the predicted class, or of the class ``target`` names. Grad-CAM's score is the class's log-odds
        (its logit less the log-sum-exp of the other classes' logits, :func:`log_odds`): evidence every class shares
        cancels out, and unlike the log-probability it does not vanish when the model is sure."""
        from medtl.utils import look_up_option

        if target is not None:
            index = self.classes.index(look_up_option(target, self.classes, what="class"))
        else:
            index = int(self.outputs_to_scores(explainer.outputs(image))[0].argmax())
        return explainer(image, index, score=log_odds), self.classes[index]

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
        out = {"roc": ("ROC curves with all the labels", roc)} if roc is not None else {}
        reliability = cls._arm_reliability(results, plot_dir)
        if reliability is not None:
            out["reliability"] = ("Reliability diagrams (test patients, seeds pooled)", reliability)
        return out

    @classmethod
    def _arm_reliability(cls, results: Any, plot_dir: Path) -> Path | None:
        """One reliability diagram per arm at the largest label fraction (the per-patient test probabilities of
        all its seeds pooled, in the 15 bins of the ECE), side by side in ``reliability.png``."""
        from medtl.comparison.plots import plot_png_grid, plot_reliability
        from medtl.train.metrics import ECE_BINS, ece

        f = max(results.fractions) if results.fractions else 1.0
        pngs: list[Path] = []
        for i, arm in enumerate(results.arms):
            units = [
                r.predictions
                for r in results.runs
                if r.arm == arm.name and abs(r.fraction - f) < 1e-9 and r.ok and r.predictions is not None
            ]
            if not units:
                continue
            labels = np.concatenate([u.labels for u in units])
            probs = np.concatenate([u.probs for u in units])
            seeds = f"{len(units)} seed{'s' if len(units) != 1 else ''}"
            pngs.append(
                plot_reliability(
                    labels,
                    probs,
                    plot_dir / f"reliability_{i}.png",
                    n_bins=ECE_BINS,
                    title=f"{arm.display}: ECE {ece(labels, probs):.3f}\n{f * 100:g}% of labels, {seeds} pooled",
                )
            )
        if not pngs:
            return None
        return plot_png_grid({"": pngs}, plot_dir / "reliability.png", columns=[""] * len(pngs), cell=4.5)

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        why = "typical of a network whose batch-norm statistics did not settle in a short training"
        return cls.constant_probability_warning(arm, runs, "probability", why)
