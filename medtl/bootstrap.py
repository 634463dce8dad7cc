"""The patient bootstrap: clusters (patients) drawn with replacement, and percentile intervals of per-patient units.

The one resampling of test patients medtl has: ``compare``'s paired difference (:mod:`medtl.comparison.stats`) and
``evaluate``'s intervals (:mod:`medtl.train.scoring`) draw their resamples here. Pure NumPy: every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["cluster_resample_counts", "MetricInterval", "bootstrap_intervals", "common_units"]


def common_units(
    keys_a: Sequence[Hashable], keys_b: Sequence[Hashable], *, order: Callable[[Any], Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into two runs' units of the units both have, matched by key (a patient, or a patient and its label),
    in one order (sorted, by ``order`` if given): what every ``align`` of the per-patient predictions pairs."""
    idx_a = {k: i for i, k in enumerate(keys_a)}
    idx_b = {k: i for i, k in enumerate(keys_b)}
    common = sorted(set(idx_a) & set(idx_b), key=order)
    return np.asarray([idx_a[k] for k in common], dtype=int), np.asarray([idx_b[k] for k in common], dtype=int)


def cluster_resample_counts(
    clusters: Sequence[object],
    *,
    strata: Sequence[object] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """How often each unit appears in each cluster-bootstrap resample: an int array (n_resamples, n_units).

    Clusters (patients) are drawn with replacement, as many as there are, within each stratum when
    ``strata`` is given (a cluster's stratum is that of its first unit); every unit of a drawn cluster
    comes along. Reproducible for a given ``seed``.
    """
    cl = np.asarray([str(c) for c in clusters], dtype=object)
    uniq, inverse = np.unique(cl, return_inverse=True)
    first = np.asarray([np.flatnonzero(inverse == c)[0] for c in range(uniq.size)], dtype=int)
    if strata is None:
        strata_of_cluster = np.zeros(uniq.size, dtype=int)
    else:
        _, st_idx = np.unique(np.asarray([str(s) for s in strata], dtype=object), return_inverse=True)
        strata_of_cluster = st_idx[first]
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, uniq.size), dtype=np.int64)
    for s in np.unique(strata_of_cluster):
        g = np.flatnonzero(strata_of_cluster == s)
        counts[:, g] = rng.multinomial(g.size, np.full(g.size, 1.0 / g.size), size=n_resamples)
    return counts[:, inverse]


@dataclass(frozen=True)
class MetricInterval:
    """A metric of one run's per-patient units with its percentile patient-bootstrap interval.

    Attributes:
        metric: the metric.
        value: the metric over the units (the point estimate).
        low: lower bound of the interval (``nan`` when fewer than two resamples gave a value); ``high`` likewise.
        n_patients: patients in the units.
        n_resamples: resamples on which the metric was defined (a resample with one class has no AUROC).
        confidence: level of the interval.
    """

    metric: str
    value: float
    low: float
    high: float
    n_patients: int
    n_resamples: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_intervals(
    units: Any,
    metrics: Sequence[str] | None = None,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, MetricInterval]:
    """Each metric of one run's per-patient units with a percentile interval over a patient bootstrap.

    Patients are drawn with replacement, as many as there are, within the units' strata when they have them (the
    class, for classification: :func:`cluster_resample_counts`), and the metric is evaluated on every resample at once
    (``units.weighted``), exactly as :func:`paired_difference` resamples test patients. The interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled values; resamples where the
    metric is undefined are left out. It covers the sampling of patients only: one trained model is taken as given.

    Args:
        units: a run's per-patient units (:meth:`medtl.tasks.base.Task.evaluation_units`).
        metrics: the metrics (default: every metric the units give).
        n_resamples: bootstrap resamples.
        confidence: level of the intervals.
        seed: seed of the resampling (the same seed gives the same intervals).
    """
    names = list(metrics) if metrics is not None else list(units.metric_names)
    nan = math.nan
    if len(units) == 0:
        return {m: MetricInterval(m, nan, nan, nan, 0, 0, confidence) for m in names}
    n_patients = len({str(p) for p in units.patient_id})
    counts = cluster_resample_counts(units.patient_id, strata=units.strata, n_resamples=n_resamples, seed=seed)
    tail = (1.0 - confidence) / 2
    out = {}
    for m in names:
        boot = np.asarray(units.weighted(m, counts), dtype=float)
        boot = boot[np.isfinite(boot)]
        low, high = (float(v) for v in np.quantile(boot, [tail, 1.0 - tail])) if boot.size >= 2 else (nan, nan)
        out[m] = MetricInterval(m, float(units.metric(m)), low, high, n_patients, int(boot.size), confidence)
    return out
