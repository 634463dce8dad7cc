"""Statistics for comparing arms: confidence intervals over seeds, paired tests over test patients, convergence.

Everything here works on plain arrays so it can be checked against independent implementations
(scikit-learn's AUROC, scipy's bootstrap, a slow DeLong written from its definition).

The unit of resampling is the **patient**, never the image: several scans of one patient are not
independent evidence, and resampling images would give confidence intervals that are too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

__all__ = [
    "MeanCI",
    "PatientPredictions",
    "PairedDifference",
    "DeLongResult",
    "Convergence",
    "mean_ci",
    "aggregate_by_patient",
    "binary_auroc",
    "compute_metric",
    "METRICS",
    "delong_test",
    "cluster_bootstrap",
    "paired_difference",
    "convergence",
]


# --------------------------------------------------------------------------------------------- seeds


@dataclass(frozen=True)
class MeanCI:
    """Mean of a metric over seeds with a two-sided t confidence interval (``nan`` bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    std: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mean_ci(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> MeanCI:
    """Mean and t-interval of ``values`` (one value per seed); non-finite values are dropped.

    With a single value the interval is undefined and reported as ``nan``; with zero spread it
    collapses onto the mean. ``bounds`` clips the interval to the metric's range (with 2-3 seeds a
    t-interval of an AUROC easily runs past 1).
    """
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanCI(mean, low, high, n, sd)


# ----------------------------------------------------------------------------------- predictions


@dataclass
class PatientPredictions:
    """Test predictions aggregated to one unit per patient and label.

    A patient's scans with the same label are averaged into one probability vector (a patient with
    scans of two different labels keeps one unit per label, tied together by ``patient_id`` so a
    bootstrap resamples them together).

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

    def to_dict(self) -> dict[str, list]:
        return {
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
        key_a = {(p, int(lab)): i for i, (p, lab) in enumerate(zip(self.patient_id, self.labels, strict=True))}
        key_b = {(p, int(lab)): i for i, (p, lab) in enumerate(zip(other.patient_id, other.labels, strict=True))}
        common = sorted(set(key_a) & set(key_b), key=lambda k: (str(k[0]), k[1]))
        ia = np.asarray([key_a[k] for k in common], dtype=int)
        ib = np.asarray([key_b[k] for k in common], dtype=int)
        return self._take(ia), other._take(ib)

    def _take(self, idx: np.ndarray) -> PatientPredictions:
        return PatientPredictions(self.patient_id[idx], self.labels[idx], self.probs[idx], self.n_images[idx])


def aggregate_by_patient(
    patient_id: Sequence[str], labels: Sequence[int], probs: np.ndarray | Sequence[Sequence[float]]
) -> PatientPredictions:
    """Average scan probabilities per (patient, label); units sorted by patient then label."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    labels = np.asarray(labels, dtype=int)
    pids = np.asarray([str(p) for p in patient_id], dtype=object)
    if not (len(pids) == len(labels) == probs.shape[0]):
        raise ValueError(f"patient_id ({len(pids)}), labels ({len(labels)}) and probs ({probs.shape[0]}) differ")
    groups: dict[tuple[str, int], list[int]] = {}
    for i, key in enumerate(zip(pids, labels.tolist(), strict=True)):
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    return PatientPredictions(
        np.asarray([k[0] for k in keys], dtype=object),
        np.asarray([k[1] for k in keys], dtype=int),
        np.stack([probs[groups[k]].mean(axis=0) for k in keys]) if keys else np.zeros((0, probs.shape[1])),
        np.asarray([len(groups[k]) for k in keys], dtype=int),
    )


# ------------------------------------------------------------------------------------------ metrics


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as in Sun & Xu 2014, algorithm 1)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = x.size
    ranks_sorted = np.empty(n, dtype=float)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks_sorted[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=float)
    out[order] = ranks_sorted
    return out


def binary_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half); ``nan`` when one class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return math.nan
    r = _midrank(s)
    return float((r[y].sum() - m * (m + 1) / 2) / (m * n))


def _auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    if probs.shape[1] == 2:
        return binary_auroc(labels == 1, probs[:, 1])
    # macro one-vs-rest over the classes present, as scikit-learn's multi_class="ovr" does
    vals = [binary_auroc(labels == c, probs[:, c]) for c in range(probs.shape[1]) if (labels == c).any()]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if len(vals) >= 2 else math.nan


def _accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean()) if labels.size else math.nan


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    pred = probs.argmax(axis=1)
    recalls = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else math.nan


def _f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """F1 of the positive class for binary tasks, macro F1 otherwise."""
    pred = probs.argmax(axis=1)
    classes = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    f1s = []
    for c in classes:
        tp = float(((pred == c) & (labels == c)).sum())
        fp = float(((pred == c) & (labels != c)).sum())
        fn = float(((pred != c) & (labels == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0)
    return float(np.mean(f1s))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": _auroc,
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "f1": _f1,
}


def compute_metric(name: str, labels: Sequence[int], probs: np.ndarray) -> float:
    """One of :data:`METRICS` on class indices and an (n, n_classes) probability array."""
    return METRICS[_look_metric(name)](np.asarray(labels, dtype=int), np.asarray(probs, dtype=float))


# ------------------------------------------------------------------------------------------- DeLong


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated AUROCs on the same cases (difference = a - b)."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    low: float
    high: float
    z: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and structural components V10 (per positive), V01 (per negative), fast midrank version.

    ``scores`` is (k, n) for k classifiers. Sun & Xu (2014), "Fast implementation of DeLong's
    algorithm for comparing the areas under correlated receiver operating characteristic curves".
    """
    pos = labels.astype(bool)
    x, y = scores[:, pos], scores[:, ~pos]
    m, n = x.shape[1], y.shape[1]
    k = scores.shape[0]
    tx = np.stack([_midrank(x[r]) for r in range(k)])
    ty = np.stack([_midrank(y[r]) for r in range(k)])
    tz = np.stack([_midrank(np.concatenate([x[r], y[r]])) for r in range(k)])
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_test(
    labels: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float], confidence: float = 0.95
) -> DeLongResult:
    """DeLong's test that two binary classifiers scored on the same cases have equal AUROC.

    Args:
        labels: 0/1 per case (here: per patient unit).
        scores_a: scores of classifier a (higher means positive).
        scores_b: scores of classifier b on the same cases.
        confidence: level of the normal-theory interval for the difference.

    Returns:
        The two AUCs, their difference (a - b), its standard error, interval, z and two-sided p.
    """
    y = np.asarray(labels).astype(int)
    s = np.stack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    if s.shape[1] != y.size:
        raise ValueError(f"{y.size} labels but {s.shape[1]} scores")
    m, n = int(y.sum()), int((1 - y).sum())
    if m < 2 or n < 2:
        nan = math.nan
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan)
    aucs, v10, v01 = _delong_components(y, s)
    s10 = np.cov(v10)
    s01 = np.cov(v01)
    cov = s10 / m + s01 / n
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    zcrit = float(_sps.norm.ppf(0.5 + confidence / 2))
    if se == 0.0:
        # identical rankings: no evidence of a difference
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    else:
        z = diff / se
        p = float(2 * _sps.norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, diff - zcrit * se, diff + zcrit * se, z, p)


# ----------------------------------------------------------------------------------------- bootstrap


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[object],
    *,
    strata: Sequence[object] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap distribution of ``statistic`` resampling whole clusters (patients) with replacement.

    Args:
        statistic: maps an index array into the units (rows) to a number; may return ``nan`` for a
            degenerate resample, which is then dropped.
        clusters: cluster (patient) of each unit.
        strata: optional stratum of each cluster's units (e.g. the patient's label); clusters are then
            resampled within each stratum so each resample keeps the class balance.
        n_resamples: number of bootstrap resamples.
        seed: random seed (results are reproducible).

    Returns:
        The finite bootstrap values (length up to ``n_resamples``).
    """
    clusters = np.asarray([str(c) for c in clusters], dtype=object)
    uniq, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(uniq.size)]
    if strata is None:
        strata_of_cluster = np.zeros(uniq.size, dtype=int)
    else:
        st = np.asarray([str(s) for s in strata], dtype=object)
        # a cluster's stratum is the stratum of its first unit
        _, st_idx = np.unique(st, return_inverse=True)
        strata_of_cluster = np.asarray([st_idx[m[0]] for m in members], dtype=int)
    groups = [np.flatnonzero(strata_of_cluster == s) for s in np.unique(strata_of_cluster)]
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples, dtype=float)
    for b in range(n_resamples):
        chosen = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])
        idx = np.concatenate([members[c] for c in chosen])
        out[b] = statistic(idx)
    return out[np.isfinite(out)]


@dataclass(frozen=True)
class PairedDifference:
    """Difference in a metric between two arms on the same test patients (a - b).

    ``low``/``high`` are the percentile bootstrap interval over patients; ``p_value`` is the two-sided
    bootstrap p-value; ``delong`` is DeLong's test when the metric is binary AUROC.
    """

    metric: str
    value_a: float
    value_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n_patients: int
    n_resamples: int
    delong: DeLongResult | None = None

    @property
    def significant(self) -> bool:
        """True when the confidence interval excludes zero."""
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delong"] = self.delong.to_dict() if self.delong is not None else None
        d["significant"] = self.significant
        return d


def paired_difference(
    a: PatientPredictions | Sequence[PatientPredictions],
    b: PatientPredictions | Sequence[PatientPredictions],
    metric: str = "auroc",
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Difference ``metric(a) - metric(b)`` on the patients both arms predicted, with a patient bootstrap.

    ``a`` and ``b`` may be lists (one entry per seed, paired by position): the difference is then the
    mean over seeds of the per-seed differences, and every bootstrap resample draws one set of
    patients used for all seeds, so the interval reflects which patients happened to be in the test
    set. Patients are resampled with replacement within each class (stratified cluster bootstrap).
    The p-value is two-sided, from the bootstrap distribution shifted to the null of no difference:
    ``p = (1 + #{|d* - d| >= |d|}) / (1 + B)``. For binary AUROC, DeLong's test is run on the
    seed-averaged scores of each arm.
    """
    list_a = [a] if isinstance(a, PatientPredictions) else list(a)
    list_b = [b] if isinstance(b, PatientPredictions) else list(b)
    if len(list_a) != len(list_b):
        raise ValueError(f"{len(list_a)} prediction sets for a but {len(list_b)} for b; they must pair up")
    fn = METRICS[_look_metric(metric)]
    nan = math.nan
    if not list_a:
        return PairedDifference(metric, nan, nan, nan, nan, nan, nan, 0, 0, None)
    # restrict every set to the units all of them share, in one order
    ref = list_a[0]
    for p in list_a[1:] + list_b:
        ref, _ = ref.align(p)
    list_a = [ref.align(p)[1] for p in list_a]
    list_b = [ref.align(p)[1] for p in list_b]
    if len(ref) == 0:
        return PairedDifference(metric, nan, nan, nan, nan, nan, nan, 0, 0, None)
    labels = ref.labels

    def value(preds: list[PatientPredictions], idx: np.ndarray) -> float:
        return float(np.mean([fn(labels[idx], p.probs[idx]) for p in preds]))

    every = np.arange(len(ref))
    va, vb = value(list_a, every), value(list_b, every)
    d = va - vb

    def stat(idx: np.ndarray) -> float:
        return value(list_a, idx) - value(list_b, idx)

    boot = cluster_bootstrap(stat, ref.patient_id, strata=labels, n_resamples=n_resamples, seed=seed)
    if boot.size == 0 or not np.isfinite(d):
        low = high = p = nan
    else:
        alpha = 1 - confidence
        low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
        p = min(1.0, float((1 + np.sum(np.abs(boot - d) >= abs(d) - 1e-12)) / (1 + boot.size)))
    dl = None
    if metric == "auroc" and ref.probs.shape[1] == 2:
        mean_a = np.mean([p.scores for p in list_a], axis=0)
        mean_b = np.mean([p.scores for p in list_b], axis=0)
        dl = delong_test(labels, mean_a, mean_b, confidence=confidence)
    n_patients = len(set(ref.patient_id.tolist()))
    return PairedDifference(metric, float(va), float(vb), float(d), low, high, p, n_patients, int(boot.size), dl)


def _look_metric(name: str) -> str:
    from medtl.utils import look_up_option

    return look_up_option(name, METRICS, what="metric")


# --------------------------------------------------------------------------------------- convergence


@dataclass(frozen=True)
class Convergence:
    """When an arm first reached a target validation score (``None`` = never within the budget)."""

    target: float
    epoch: int | None
    seconds: float | None

    @property
    def reached(self) -> bool:
        return self.epoch is not None

    def to_dict(self) -> dict:
        return {"target": self.target, "epoch": self.epoch, "seconds": self.seconds, "reached": self.reached}


def convergence(
    epochs: Sequence[int],
    seconds: Sequence[float],
    scores: Sequence[float],
    target: float,
    *,
    higher_is_better: bool = True,
) -> Convergence:
    """First epoch (1-based as logged) and wall-clock seconds at which ``scores`` reach ``target``.

    Args:
        epochs: epoch number of each validation score, as logged in ``metrics.csv``.
        seconds: wall-clock seconds since the run started at the end of each epoch.
        scores: validation score per epoch (``nan`` for epochs without validation).
        target: the score to reach, usually the scratch arm's best validation score.
        higher_is_better: False for losses.
    """
    for e, t, s in zip(epochs, seconds, scores, strict=True):
        if s is None or not np.isfinite(s):
            continue
        if (s >= target - 1e-12) if higher_is_better else (s <= target + 1e-12):
            return Convergence(float(target), int(e), float(t))
    return Convergence(float(target), None, None)
