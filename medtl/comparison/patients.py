"""Per-patient predictions of a run, and the metrics over patients (weighted, for resampling at once).

A patient's scan probabilities are averaged first: several scans of one patient are not independent evidence.
The metrics are :mod:`medtl.train.metrics` (scikit-learn); ``weighted_metric`` scores every bootstrap resample
at once (equal to scikit-learn on the expanded resample, tested to 1e-12).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.metric_specs import metrics_for_task

__all__ = [
    "METRIC_NAMES",
    "METRICS",
    "PatientPredictions",
    "aggregate_by_patient",
    "binary_auroc",
    "compute_metric",
    "look_metric",
    "weighted_metric",
]

#: The metrics of a classification comparison (:data:`medtl.metric_specs.METRICS`).
METRIC_NAMES: tuple[str, ...] = metrics_for_task("classification")


@dataclass
class PatientPredictions:
    """Test predictions aggregated to one unit per patient and label.

    A patient's scans with the same label are averaged into one probability vector. The unit is
    (patient, label) rather than the patient because a patient can hold scans of two labels (a normal
    and an abnormal knee): averaging those would give one probability for two truths. Such units are
    tied together by ``patient_id``, so the bootstrap resamples the patient as a whole, and
    ``n_patients`` counts patients, not units.

    Attributes:
        patient_id: one entry per unit (hashed IDs).
        labels: class index per unit.
        probs: array (n_units, n_classes) of class probabilities.
        n_images: scans averaged into each unit.
    """

    patient_id: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    n_images: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def scores(self) -> np.ndarray:
        """Probability of the positive (last) class, for binary tasks."""
        return self.probs[:, -1]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRIC_NAMES

    @property
    def strata(self) -> np.ndarray:
        """The bootstrap resamples patients within each class, so every resample keeps the class balance."""
        return self.labels

    def metric(self, name: str) -> float:
        """One of :data:`METRIC_NAMES` over the units (:func:`compute_metric`)."""
        return compute_metric(name, self.labels, self.probs)

    def weighted(self, name: str, counts: np.ndarray) -> np.ndarray:
        """The metric on many resamples at once, one row of unit counts each (:func:`weighted_metric`)."""
        return weighted_metric(name, self.labels, self.probs, counts)

    def n_left_out(self, name: str) -> int:
        """Units left out of ``name`` (none: every classification metric is defined on every unit)."""
        return 0

    def delong_scores(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(labels, scores)`` for DeLong's test when ``name`` is a two-class AUROC, else None."""
        return (self.labels, self.scores) if name == "auroc" and self.probs.shape[1] == 2 else None

    def same_units(self, other: PatientPredictions) -> bool:
        return (
            len(self) == len(other)
            and np.array_equal(self.labels, other.labels)
            and bool((self.patient_id == other.patient_id).all())
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "classification",
            "patient_id": [str(p) for p in self.patient_id],
            "label": [int(v) for v in self.labels],
            "probs": [[float(v) for v in row] for row in self.probs],
            "n_images": [int(v) for v in self.n_images],
        }

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> PatientPredictions:
        probs = np.asarray(d["probs"], dtype=float)
        if probs.ndim == 1:
            probs = probs.reshape(len(d["label"]), -1)
        return cls(
            np.asarray(d["patient_id"], dtype=object),
            np.asarray(d["label"], dtype=int),
            probs,
            np.asarray(d.get("n_images", [1] * len(d["label"])), dtype=int),
        )

    def align(self, other: PatientPredictions) -> tuple[PatientPredictions, PatientPredictions]:
        """Both prediction sets restricted to their common (patient, label) units, in the same order."""
        from medtl.bootstrap import common_units

        ia, ib = common_units(
            [(p, int(lab)) for p, lab in zip(self.patient_id, self.labels, strict=True)],
            [(p, int(lab)) for p, lab in zip(other.patient_id, other.labels, strict=True)],
            order=lambda k: (str(k[0]), k[1]),
        )
        return self._take(ia), other._take(ib)

    def _take(self, idx: np.ndarray) -> PatientPredictions:
        return PatientPredictions(self.patient_id[idx], self.labels[idx], self.probs[idx], self.n_images[idx])


def aggregate_by_patient(
    patient_id: Sequence[str], labels: Sequence[int], probs: np.ndarray | Sequence[Sequence[float]]
) -> PatientPredictions:
    """Average scan probabilities per (patient, label); units sorted by patient then label.

    See :class:`PatientPredictions` for why the unit is (patient, label).
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    labels = np.asarray(labels, dtype=int)
    pids = np.asarray([str(p) for p in patient_id], dtype=object)
    if not (len(pids) == len(labels) == probs.shape[0]):
        raise ValueError(f"patient_id ({len(pids)}), labels ({len(labels)}) and probs ({probs.shape[0]}) differ")
    unit_of: dict[tuple[str, int], int] = {}
    inverse = np.asarray(
        [unit_of.setdefault(key, len(unit_of)) for key in zip(pids.tolist(), labels.tolist(), strict=True)],
        dtype=np.int64,
    )
    keys = list(unit_of)
    sums = np.zeros((len(keys), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(keys))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return PatientPredictions(
        np.asarray([keys[j][0] for j in order], dtype=object),
        np.asarray([keys[j][1] for j in order], dtype=int),
        (sums / np.maximum(counts, 1)[:, None])[order],
        counts[order].astype(int),
    )


# ------------------------------------------------------------------------------------------ metrics


def _metrics_module() -> Any:
    # imported when first needed: medtl.train loads Lightning, which `import medtl.comparison` should not
    from medtl.train import metrics

    return metrics


def compute_metric(name: str, labels: Sequence[int], probs: np.ndarray) -> float:
    """One of :data:`METRIC_NAMES` on class indices and an (n, n_classes) probability array.

    This is :func:`medtl.train.metrics.compute_metric`, the implementation training uses.
    """
    return float(_metrics_module().compute_metric(look_metric(name), labels, probs))


def binary_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half); ``nan`` when one class is absent."""
    return float(_metrics_module().binary_auroc(labels, scores))


#: name -> function(labels, probs), each :func:`compute_metric` with the name filled in.
METRICS: dict[str, Callable[[Any, Any], float]] = {
    name: functools.partial(compute_metric, name) for name in METRIC_NAMES
}


def look_metric(name: str) -> str:
    from medtl.utils import look_up_option

    return look_up_option(name, METRIC_NAMES, what="metric")


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC (ties one half) with unit weights, for every row of ``weights`` (B, n) at once.

    With integer weights (bootstrap counts) this is the AUROC of the data set in which unit i appears
    ``weights[b, i]`` times: sort once, sum the weights per distinct score, and count for each positive
    the weight of negatives below it (plus half the tied ones). O(B n) instead of O(B n log n).
    """
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = positive[order]
    pos_g = np.add.reduceat(w * pos, starts, axis=1)
    neg_g = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    num = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    den = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _weighted_ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Expected calibration error of every row of unit weights ``w`` (B, n): per bin, the weighted sum of outcomes
    less the weighted sum of confidences (:func:`medtl.train.metrics.calibration_target` and ``calibration_bins``:
    the same bins as the unweighted metric), summed in absolute value over the bins and divided by the total."""
    metrics = _metrics_module()
    conf, hit = metrics.calibration_target(y, p)
    bins = metrics.calibration_bins(conf)
    onehot = np.eye(metrics.ECE_BINS)[bins]  # (n, bins)
    gap = w @ (onehot * (hit - conf)[:, None])
    return np.where(total > 0, np.abs(gap).sum(axis=1) / total, np.nan)


def weighted_metric(name: str, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A metric of :data:`METRIC_NAMES` on many resamples at once, each given as unit weights.

    Row ``b`` of ``weights`` (B, n) holds how often each unit appears in resample ``b``; the result
    equals :func:`compute_metric` on that resample (the units repeated by their counts), with the same
    definitions (AUROC one-vs-rest over the classes present, macro F1 over the classes in labels or
    predictions, ECE and Brier score as :mod:`medtl.train.metrics` defines them, ...). The tests check this against
    scikit-learn and those functions on expanded resamples. This is what
    makes a bootstrap of thousands of resamples take milliseconds.

    Returns:
        One value per row of ``weights`` (``nan`` where the metric is undefined in that resample).
    """
    name = look_metric(name)
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    n_classes = p.shape[1]
    total = w.sum(axis=1)
    pred = p.argmax(axis=1)
    correct = (pred == y).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "auroc":
            if n_classes == 2:
                return _weighted_auc(y == 1, p[:, 1], w)
            per_class = np.stack([_weighted_auc(y == c, p[:, c], w) for c in range(n_classes)], axis=1)
            n_ok = np.isfinite(per_class).sum(axis=1)
            mean = np.nansum(per_class, axis=1) / np.maximum(n_ok, 1)
            return np.where(n_ok >= 2, mean, np.nan)
        if name == "accuracy":
            return np.where(total > 0, w @ correct / total, np.nan)
        if name == "ece":
            return _weighted_ece(y, p, w, total)
        if name == "brier":
            if n_classes == 2:
                sq = (p[:, 1] - (y == 1)) ** 2
            else:
                sq = ((p - np.eye(n_classes)[y]) ** 2).sum(axis=1)
            return np.where(total > 0, w @ sq / total, np.nan)
        if name == "balanced_accuracy":
            recalls = []
            for c in range(n_classes):
                in_c = (y == c).astype(float)
                n_c = w @ in_c
                recalls.append(np.where(n_c > 0, (w @ (in_c * correct)) / n_c, np.nan))
            r = np.stack(recalls, axis=1)
            n_ok = np.isfinite(r).sum(axis=1)
            return np.where(n_ok > 0, np.nansum(r, axis=1) / np.maximum(n_ok, 1), np.nan)
        # f1: class 1 for two classes, macro over the classes in labels or predictions otherwise
        classes = [1] if n_classes == 2 else list(range(n_classes))
        scores, used = [], []
        for c in classes:
            tp = w @ ((pred == c) & (y == c)).astype(float)
            fp = w @ ((pred == c) & (y != c)).astype(float)
            fn = w @ ((pred != c) & (y == c)).astype(float)
            den = 2 * tp + fp + fn
            scores.append(np.where(den > 0, 2 * tp / den, 0.0))
            used.append(den > 0)
        f, u = np.stack(scores, axis=1), np.stack(used, axis=1)
        if n_classes == 2:
            return np.where(total > 0, f[:, 0], np.nan)
        n_used = u.sum(axis=1)
        return np.where(n_used > 0, (f * u).sum(axis=1) / np.maximum(n_used, 1), np.nan)
