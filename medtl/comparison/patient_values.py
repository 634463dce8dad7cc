"""Per-patient values of a segmentation run's test metrics, and their means over resampled patients.

A segmentation run writes one row per test scan (``predictions_test.csv``: ``dice_<class>``, ``hd95_<class>``,
``surface_dice_<class>`` for each foreground class; conventions in :mod:`medtl.tasks.segmentation`). For each
foreground class, a patient's value is the mean over the patient's scans (HD95: over the scans where it is
defined); the run's value for the class is the mean over patients (HD95: over the patients where it is defined),
and the run's ``dice``, ``hd95`` and ``surface_dice`` are the means over the foreground classes. With one scan per
patient and no undefined HD95 this is the mean over patients of each patient's class-averaged value; it is the
order :mod:`medtl.tasks.segmentation` uses for its per-patient means, so a run folder's ``<metric>_patient`` and
the comparison agree. A patient with no defined value (HD95 undefined for every class of every scan) is left out
of that metric and counted (:meth:`PatientValues.n_left_out`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtl.errors import RunDirError
from medtl.metric_specs import metrics_for_task

__all__ = ["PatientValues", "aggregate_scan_rows", "foreground_classes"]

#: the per-scan metrics of a segmentation run (:data:`medtl.metric_specs.METRICS`)
SEGMENTATION_METRICS = metrics_for_task("segmentation")


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # an all-NaN slice is a defined answer here: NaN (left out)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


@dataclass
class PatientValues:
    """Test metric values of one run, one unit per patient.

    Attributes:
        patient_id: one entry per patient (hashed IDs), sorted.
        values: metric name -> array (n_patients, n_classes) of per-patient, per-class values (``nan`` where the
            metric is undefined for every scan of the patient); the metrics of :data:`SEGMENTATION_METRICS` hold
            every foreground class, their per-class forms (``dice_lung``) one column.
        n_scans: scans averaged into each patient.
    """

    patient_id: np.ndarray
    values: dict[str, np.ndarray]
    n_scans: np.ndarray

    def __len__(self) -> int:
        return int(self.patient_id.size)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def strata(self) -> None:
        """No strata: patients are resampled as one pool (the mean of per-patient values needs no class balance)."""
        return None

    def metric(self, name: str) -> float:
        """The run's value: per class the mean over patients where it is defined, then the mean over classes."""
        return float(self.weighted(name, np.ones((1, len(self))))[0])

    def n_left_out(self, name: str) -> int:
        """Patients left out of ``name`` because it is undefined for every class of every one of their scans."""
        return int((~np.isfinite(self.values[name])).all(axis=1).sum()) if len(self) else 0

    def weighted(self, name: str, counts: np.ndarray) -> np.ndarray:
        """The metric on many patient resamples at once.

        Row ``b`` of ``counts`` (B, n) holds how often each patient is drawn; per class, the mean over the drawn
        patients where the metric is defined, then the mean over the classes defined in that resample (``nan``
        when none is).
        """
        v = self.values[name]
        w = np.atleast_2d(np.asarray(counts, dtype=float))
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = w @ ok  # (B, k): drawn patients where each class is defined
            per_class = np.where(total > 0, (w @ np.where(ok, v, 0.0)) / total, np.nan)
        return _nanmean(per_class, axis=1)

    def delong_scores(self, name: str) -> None:
        """DeLong's test is about AUROC; it does not apply to per-patient metric values."""
        return None

    def same_units(self, other: PatientValues) -> bool:
        return len(self) == len(other) and bool((self.patient_id == other.patient_id).all())

    def align(self, other: PatientValues) -> tuple[PatientValues, PatientValues]:
        """Both restricted to the patients they share, in the same order."""
        from medtl.bootstrap import common_units

        ia, ib = common_units([str(p) for p in self.patient_id], [str(p) for p in other.patient_id])
        return self._take(ia), other._take(ib)

    def _take(self, idx: np.ndarray) -> PatientValues:
        return PatientValues(self.patient_id[idx], {k: v[idx] for k, v in self.values.items()}, self.n_scans[idx])

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "segmentation",
            "patient_id": [str(p) for p in self.patient_id],
            "values": {
                k: [[float(x) if np.isfinite(x) else None for x in row] for row in v] for k, v in self.values.items()
            },
            "n_scans": [int(n) for n in self.n_scans],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatientValues:
        pids = np.asarray([str(p) for p in d["patient_id"]], dtype=object)
        values = {
            k: np.asarray([[math.nan if x is None else float(x) for x in row] for row in v], dtype=float).reshape(
                len(pids), -1
            )
            for k, v in d["values"].items()
        }
        return cls(pids, values, np.asarray(d.get("n_scans") or [1] * len(pids), dtype=int))


def foreground_classes(columns: Sequence[str]) -> list[str]:
    """The foreground classes of a segmentation predictions CSV: those with a ``dice_<class>`` column."""
    return [c.removeprefix("dice_") for c in columns if c.startswith("dice_")]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def aggregate_scan_rows(rows: Sequence[dict[str, str]], *, source: str = "predictions_test.csv") -> PatientValues:
    """Per-patient values from the per-scan rows of a segmentation run (see the module docstring).

    Args:
        rows: the rows of ``predictions_<split>.csv`` as :meth:`medtl.rundir.RunDir.read_prediction_rows`
            returns them.
        source: the file, for error messages.

    Raises:
        RunDirError: the rows lack ``patient_id`` or the per-class metric columns.
    """
    columns = list(rows[0]) if rows else []
    classes = foreground_classes(columns)
    needed = ["patient_id"] + [f"{m}_{c}" for m in SEGMENTATION_METRICS for c in classes]
    missing = [c for c in needed if c not in columns]
    if rows and (missing or not classes):
        raise RunDirError(
            f"{source}: not a segmentation predictions file (missing {', '.join(missing) or 'dice_<class>'}; "
            f"found {', '.join(columns)})",
            path=source,
            fix="compare reads the per-scan rows a segmentation run writes; train the run again",
        )
    pids = np.asarray([str(r["patient_id"]) for r in rows], dtype=object)
    # per scan: (metric, class)
    table = np.asarray(
        [[[_float(r.get(f"{m}_{c}")) for c in classes] for m in SEGMENTATION_METRICS] for r in rows], dtype=float
    ).reshape(len(rows), len(SEGMENTATION_METRICS), len(classes))
    uniq, inverse = np.unique(pids, return_inverse=True)
    per_patient = np.stack([_nanmean(table[inverse == i], axis=0) for i in range(uniq.size)]) if rows else table
    values: dict[str, np.ndarray] = {}
    for i, m in enumerate(SEGMENTATION_METRICS):
        values[m] = per_patient[:, i, :]
        for j, c in enumerate(classes):
            values[f"{m}_{c}"] = per_patient[:, i, j : j + 1]
    return PatientValues(np.asarray(uniq, dtype=object), values, np.bincount(inverse, minlength=uniq.size))
