"""Statistics for comparing arms: intervals over seeds, the paired difference over seeds and patients, convergence.

Everything here works on plain arrays so it can be checked against independent implementations
(scikit-learn, scipy's bootstrap, a slow DeLong written from its definition, simulations with a known
truth). The metrics themselves are :mod:`medtl.train.metrics` (scikit-learn), the one implementation
training and evaluation use too; this module adds what no library gives: the patient bootstrap (with
the metrics evaluated on every resample at once), the seed-and-patient interval of a paired
difference, DeLong's test and the convergence measure.

The unit of resampling is the **patient**, never the image: several scans of one patient are not
independent evidence, and resampling images would give confidence intervals that are too narrow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "MIN_SEEDS_FOR_VERDICT",
    "METRIC_NAMES",
    "METRICS",
    "MeanCI",
    "PatientPredictions",
    "PairedDifference",
    "DeLongResult",
    "Convergence",
    "mean_ci",
    "aggregate_by_patient",
    "binary_auroc",
    "compute_metric",
    "weighted_metric",
    "delong_test",
    "cluster_resample_counts",
    "cluster_bootstrap",
    "paired_difference",
    "seeds_needed",
    "convergence",
    "smooth_scores",
    "plateau",
    "censored_median",
]

#: Below this many seeds per arm, training noise cannot be told apart from an effect: no verdict.
MIN_SEEDS_FOR_VERDICT = 3

#: The metrics a comparison can use; the same names as :data:`medtl.train.metrics.METRIC_NAMES`.
METRIC_NAMES: tuple[str, ...] = ("auroc", "accuracy", "balanced_accuracy", "f1")


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
    # imported when first needed: medtl.train loads Lightning, which `import medtl.evaluate` should not
    from medtl.train import metrics

    return metrics


def compute_metric(name: str, labels: Sequence[int], probs: np.ndarray) -> float:
    """One of :data:`METRIC_NAMES` on class indices and an (n, n_classes) probability array.

    This is :func:`medtl.train.metrics.compute_metric`, the implementation training uses.
    """
    return float(_metrics_module().compute_metric(_look_metric(name), labels, probs))


def binary_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half); ``nan`` when one class is absent."""
    return float(_metrics_module().binary_auroc(labels, scores))


#: name -> function(labels, probs), each :func:`compute_metric` with the name filled in.
METRICS: dict[str, Callable[[Any, Any], float]] = {
    name: functools.partial(compute_metric, name) for name in METRIC_NAMES
}


def _look_metric(name: str) -> str:
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


def weighted_metric(name: str, labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A metric of :data:`METRIC_NAMES` on many resamples at once, each given as unit weights.

    Row ``b`` of ``weights`` (B, n) holds how often each unit appears in resample ``b``; the result
    equals :func:`compute_metric` on that resample (the units repeated by their counts), with the same
    definitions (AUROC one-vs-rest over the classes present, macro F1 over the classes in labels or
    predictions, ...). The tests check this against scikit-learn on expanded resamples. This is what
    makes a bootstrap of thousands of resamples take milliseconds.

    Returns:
        One value per row of ``weights`` (``nan`` where the metric is undefined in that resample).
    """
    name = _look_metric(name)
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


# ------------------------------------------------------------------------------------------- DeLong


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated AUROCs on the same cases (difference = a - b).

    When the standard error is zero (identical rankings, or an arm with constant output) the test is
    not estimable: ``se`` is 0 and ``low``, ``high``, ``z`` and ``p_value`` are ``nan``, never p = 0 or a
    zero-width interval.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    low: float
    high: float
    z: float
    p_value: float

    @property
    def estimable(self) -> bool:
        """False when the standard error is zero or undefined, so there is no test to report."""
        return bool(np.isfinite(self.se) and self.se > 0)

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self) | {"estimable": self.estimable}


def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and structural components V10 (per positive), V01 (per negative), fast midrank version.

    ``scores`` is (k, n) for k classifiers. Sun & Xu (2014), "Fast implementation of DeLong's
    algorithm for comparing the areas under correlated receiver operating characteristic curves";
    midranks from ``scipy.stats.rankdata``.
    """
    pos = labels.astype(bool)
    x, y = scores[:, pos], scores[:, ~pos]
    m, n = x.shape[1], y.shape[1]
    tx = _sps.rankdata(x, axis=1)
    ty = _sps.rankdata(y, axis=1)
    tz = _sps.rankdata(np.concatenate([x, y], axis=1), axis=1)
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
        The two AUCs, their difference (a - b), its standard error, interval, z and two-sided p; see
        :class:`DeLongResult` for the case of a zero standard error.
    """
    y = np.asarray(labels).astype(int)
    s = np.stack([np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)])
    if s.shape[1] != y.size:
        raise ValueError(f"{y.size} labels but {s.shape[1]} scores")
    m, n = int(y.sum()), int((1 - y).sum())
    nan = math.nan
    if m < 2 or n < 2:
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan)
    aucs, v10, v01 = _delong_components(y, s)
    cov = np.cov(v10) / m + np.cov(v01) / n
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    # rounding leaves ~1e-17 where the variance is exactly zero
    se = math.sqrt(var) if var > 1e-14 else 0.0
    if se == 0.0:
        return DeLongResult(float(aucs[0]), float(aucs[1]), diff, 0.0, nan, nan, nan, nan)
    zcrit = float(_sps.norm.ppf(0.5 + confidence / 2))
    z = diff / se
    p = float(2 * _sps.norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, diff - zcrit * se, diff + zcrit * se, z, p)


# ----------------------------------------------------------------------------------------- bootstrap


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
    counts = cluster_resample_counts(clusters, strata=strata, n_resamples=n_resamples, seed=seed)
    units = np.arange(counts.shape[1])
    out = np.asarray([statistic(np.repeat(units, row)) for row in counts], dtype=float)
    return out[np.isfinite(out)]


# ------------------------------------------------------------------------------- paired difference


@dataclass(frozen=True)
class PairedDifference:
    """Difference in a metric between two arms on the same test patients (a - b), over seeds and patients.

    The difference is the mean over seeds of the per-seed paired differences. Its uncertainty has
    two sources, both reported: training noise (``seed_sd``, the SD of the per-seed differences) and
    the sampling of test patients (``patient_se``, the bootstrap SE of the seed-averaged difference if
    the seeds were fixed). ``se`` combines them (see :func:`paired_difference`), and ``low``/``high`` and
    ``p_value`` are the t-interval and t-test of that one estimate, so they always agree: the interval
    excludes 0 exactly when ``p_value < 1 - confidence``. ``delong`` is DeLong's test on the seed-averaged
    scores (binary AUROC only; patients only, as a second opinion).

    Attributes:
        metric: the metric.
        value_a: mean over seeds of arm a's metric; ``value_b`` likewise.
        difference: mean over seeds of (a - b).
        low: lower bound of the confidence interval (``nan`` when not estimable); ``high`` likewise.
        p_value: two-sided p-value of "no difference" (``nan`` when not estimable).
        n_patients: test patients both arms predicted.
        n_resamples: patient bootstrap resamples used.
        delong: DeLong's test, or ``None``.
        n_seeds: seeds paired between the arms.
        seed_sd: SD over seeds of the per-seed differences (``nan`` with one seed).
        patient_se: bootstrap SE over patients of the seed-averaged difference.
        shared_patient_se: the part of ``patient_se`` common to all seeds (counted once in ``se``).
        se: standard error of ``difference`` from both sources.
        df: degrees of freedom of the t-interval (Welch-Satterthwaite, made conservative; see ``_combine``).
        per_seed: the per-seed differences.
        confidence: level of the interval.
        method: how the interval was made, in words.
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
    n_seeds: int = 1
    seed_sd: float = math.nan
    patient_se: float = math.nan
    shared_patient_se: float = math.nan
    se: float = math.nan
    df: float = math.nan
    per_seed: tuple[float, ...] = field(default_factory=tuple)
    confidence: float = 0.95
    method: str = "t-interval over seeds with the shared patient variance (patient bootstrap)"

    @property
    def estimable(self) -> bool:
        """True when the interval and p-value exist (at least 2 seeds and a non-zero standard error)."""
        return bool(np.isfinite(self.se) and self.se > 0 and np.isfinite(self.low))

    @property
    def verdict_allowed(self) -> bool:
        """True when a "beat"/"did worse" verdict may be given: enough seeds and an estimable interval."""
        return self.n_seeds >= MIN_SEEDS_FOR_VERDICT and self.estimable

    @property
    def significant(self) -> bool:
        """True when a verdict is allowed and the confidence interval excludes zero."""
        return self.verdict_allowed and bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delong"] = self.delong.to_dict() if self.delong is not None else None
        d["per_seed"] = list(self.per_seed)
        d["estimable"] = self.estimable
        d["verdict_allowed"] = self.verdict_allowed
        d["significant"] = self.significant
        return d


#: The degrees of freedom are computed with the seed variance at the upper end of its 50% confidence interval.
_SEED_VARIANCE_QUANTILE = 0.25


def _combine(seed_sd: float, shared_var: float, n_seeds: int, n_patients: int) -> tuple[float, float]:
    """Standard error and degrees of freedom of the seed-averaged difference.

    ``se**2 = seed_sd**2 / k + shared_var``. The degrees of freedom are Welch-Satterthwaite's for the
    two parts (``k - 1`` for the seed part, ``n_patients - 1`` for the patient part), but computed with
    the seed variance at the upper end of its 50% confidence interval rather than at its estimate: with
    3 seeds the plug-in value is too often small by chance, which raises the degrees of freedom just when
    the standard error is too small, and the interval then claimed a difference in 8-10% of simulated
    comparisons of equal arms (100 test patients) instead of 5%. The standard error itself is unchanged.
    """
    a = seed_sd**2 / n_seeds  # training noise (plus the seed-specific part of patient noise)
    c = max(shared_var, 0.0)  # patient noise common to every seed
    var = a + c
    if not np.isfinite(var):
        return math.nan, math.nan
    if var <= 1e-14:
        return 0.0, math.nan
    a_up = a * (n_seeds - 1) / float(_sps.chi2.ppf(_SEED_VARIANCE_QUANTILE, n_seeds - 1)) if n_seeds > 1 else 0.0
    den = (a_up**2 / (n_seeds - 1) if n_seeds > 1 else 0.0) + c**2 / max(n_patients - 1, 1)
    df = (a_up + c) ** 2 / den if den > 0 else math.inf
    return math.sqrt(var), df


def _same_units(p: PatientPredictions, q: PatientPredictions) -> bool:
    return len(p) == len(q) and np.array_equal(p.labels, q.labels) and bool((p.patient_id == q.patient_id).all())


def paired_difference(
    a: PatientPredictions | Sequence[PatientPredictions],
    b: PatientPredictions | Sequence[PatientPredictions],
    metric: str = "auroc",
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Difference ``metric(a) - metric(b)`` on the patients both arms predicted, over seeds and patients.

    ``a`` and ``b`` are lists with one entry per seed, paired by position (a single
    :class:`PatientPredictions` is one seed). The difference is the mean of the per-seed differences
    ``d_s``. It varies for two reasons: each training run's quality varies by seed, and the test patients
    are a sample. Both count:

    ``se**2 = seed_sd**2 / k + shared``

    where ``seed_sd`` is the SD of the ``k`` per-seed differences and ``shared`` is the patient variance
    common to all seeds: the mean covariance between different seeds' differences over a stratified
    patient bootstrap (patients drawn with replacement within each class; the metric is evaluated on
    every resample). Patient noise that differs between seeds already shows in ``seed_sd``, so only
    the shared part is added; nothing is counted twice. The interval is ``d ± t * se`` and the p-value
    the two-sided t-test of ``d / se`` with the same degrees of freedom (Welch-Satterthwaite over the
    two parts, made conservative as :func:`_combine` explains), so interval and p-value come from one
    procedure and never disagree.

    Why not a two-level bootstrap (seeds, then patients): with the 3-5 seeds a comparison affords,
    resampling seeds sees a handful of distinct means and understates their spread (a normal quantile
    where a t-quantile with 2-4 degrees of freedom is needed). In the simulation of
    ``tests/evaluate/test_calibration.py`` its percentile interval gave 8-12% false verdicts when the
    between-seed SD was 0.107 AUROC (4-7% at 0.056); this interval stayed at or under about 6% in
    every setting. A patient-only interval, which ignores training noise, gave 8-18% (SD 0.056) and
    19-43% (SD 0.107).

    With one seed the interval is undefined (``nan``): training noise cannot be estimated. With fewer
    than :data:`MIN_SEEDS_FOR_VERDICT` seeds the interval is computed but no verdict is allowed
    (:attr:`PairedDifference.verdict_allowed`). A zero standard error (identical arms, constant
    outputs) is "not estimable", never p = 0. For binary AUROC, DeLong's test is run on the
    seed-averaged scores as a second opinion.
    """
    list_a = [a] if isinstance(a, PatientPredictions) else list(a)
    list_b = [b] if isinstance(b, PatientPredictions) else list(b)
    if len(list_a) != len(list_b):
        raise ValueError(f"{len(list_a)} prediction sets for a but {len(list_b)} for b; they must pair up")
    metric = _look_metric(metric)
    nan = math.nan
    if not list_a:
        return PairedDifference(metric, nan, nan, nan, nan, nan, nan, 0, 0, None, 0, confidence=confidence)
    ref = list_a[0]
    if not all(_same_units(ref, p) for p in list_a[1:] + list_b):
        # restrict every set to the units all of them share, in one order
        for p in list_a[1:] + list_b:
            ref, _ = ref.align(p)
        list_a = [ref.align(p)[1] for p in list_a]
        list_b = [ref.align(p)[1] for p in list_b]
    k = len(list_a)
    if len(ref) == 0:
        return PairedDifference(metric, nan, nan, nan, nan, nan, nan, 0, 0, None, k, confidence=confidence)
    labels = ref.labels
    n_patients = len(set(ref.patient_id.tolist()))
    # row 0: every unit once, the observed data (equal to compute_metric, which the tests check); then the resamples
    counts = np.vstack(
        [
            np.ones((1, len(ref)), dtype=np.int64),
            cluster_resample_counts(ref.patient_id, strata=labels, n_resamples=n_resamples, seed=seed),
        ]
    )
    va = np.stack([weighted_metric(metric, labels, p.probs, counts) for p in list_a], axis=1)
    vb = np.stack([weighted_metric(metric, labels, p.probs, counts) for p in list_b], axis=1)
    per_seed = va[0] - vb[0]
    d = float(np.mean(per_seed))
    boot = (va - vb)[1:]
    boot = boot[np.isfinite(boot).all(axis=1)]
    n_boot = int(boot.shape[0])
    patient_se = shared_var = nan
    if n_boot >= 2 and np.isfinite(d):
        cov = np.atleast_2d(np.cov(boot, rowvar=False))
        patient_se = math.sqrt(max(float(cov.mean()), 0.0))  # variance of the seed mean = mean of all entries
        if k >= 2:
            shared_var = float((cov.sum() - np.trace(cov)) / (k * (k - 1)))
    seed_sd = float(np.std(per_seed, ddof=1)) if k >= 2 else nan
    se = df = low = high = p_value = nan
    if k >= 2 and np.isfinite(seed_sd) and np.isfinite(shared_var):
        se, df = _combine(seed_sd, shared_var, k, n_patients)
        if se > 0:
            tcrit = float(_sps.t.ppf(0.5 + confidence / 2, df))
            low, high = d - tcrit * se, d + tcrit * se
            p_value = float(min(1.0, 2 * _sps.t.sf(abs(d) / se, df)))
    dl = None
    if metric == "auroc" and ref.probs.shape[1] == 2:
        mean_a = np.mean([p.scores for p in list_a], axis=0)
        mean_b = np.mean([p.scores for p in list_b], axis=0)
        dl = delong_test(labels, mean_a, mean_b, confidence=confidence)
    return PairedDifference(
        metric,
        float(np.mean(va[0])),
        float(np.mean(vb[0])),
        d,
        float(low),
        float(high),
        float(p_value),
        n_patients,
        n_boot,
        dl,
        k,
        seed_sd,
        patient_se,
        math.sqrt(max(shared_var, 0.0)) if np.isfinite(shared_var) else nan,
        float(se),
        float(df),
        tuple(float(v) for v in per_seed),
        confidence,
    )


def seeds_needed(
    difference: float,
    seed_sd: float,
    shared_patient_se: float,
    n_patients: int,
    *,
    confidence: float = 0.95,
    max_seeds: int = 50,
) -> int | None:
    """Seeds per arm for which a difference of this size would just reach significance, or ``None``.

    The smallest ``k >= MIN_SEEDS_FOR_VERDICT`` for which the interval half-width
    ``t(df) * sqrt(seed_sd**2 / k + shared_patient_se**2)`` falls below ``|difference|``; at that ``k`` a
    true difference of this size is found about half the time. ``None`` when not even ``max_seeds``
    would do, for instance because the test set alone (``shared_patient_se``) is too small.
    """
    if not all(np.isfinite(v) for v in (difference, seed_sd, shared_patient_se)) or difference == 0:
        return None
    for k in range(MIN_SEEDS_FOR_VERDICT, max_seeds + 1):
        se, df = _combine(seed_sd, shared_patient_se**2, k, n_patients)
        if se > 0 and float(_sps.t.ppf(0.5 + confidence / 2, df)) * se < abs(difference):
            return k
    return None


# --------------------------------------------------------------------------------------- convergence


@dataclass(frozen=True)
class Convergence:
    """When an arm first reached a target validation score (``None`` = not within the budget: censored)."""

    target: float
    epoch: int | None
    seconds: float | None

    @property
    def reached(self) -> bool:
        return self.epoch is not None

    def to_dict(self) -> dict:
        return {"target": self.target, "epoch": self.epoch, "seconds": self.seconds, "reached": self.reached}


def smooth_scores(scores: Sequence[float], window: int = 3) -> list[float]:
    """Trailing mean of each epoch's score over the last ``window`` finite scores (``nan`` stays ``nan``)."""
    out, seen = [], []
    for s in scores:
        if s is None or not np.isfinite(s):
            out.append(math.nan)
            continue
        seen.append(float(s))
        out.append(float(np.mean(seen[-window:])))
    return out


def plateau(scores: Sequence[float], tail: float = 1 / 3) -> float:
    """Level a validation curve settles at: the mean of its last ``tail`` share of finite scores (at least one)."""
    x = [float(s) for s in scores if s is not None and np.isfinite(s)]
    if not x:
        return math.nan
    n = max(1, math.ceil(tail * len(x)))
    return float(np.mean(x[-n:]))


def convergence(
    epochs: Sequence[int],
    seconds: Sequence[float],
    scores: Sequence[float],
    target: float,
    *,
    higher_is_better: bool = True,
    window: int = 1,
) -> Convergence:
    """First epoch (as logged) and wall-clock seconds at which ``scores`` reach ``target``.

    Args:
        epochs: epoch number of each validation score, as logged in ``metrics.csv``.
        seconds: wall-clock seconds since the run started at the end of each epoch.
        scores: validation score per epoch (``nan`` for epochs without validation).
        target: the score to reach; a comparison uses the reference arm's :func:`plateau` minus a
            tolerance, and measures every arm, the reference included, against it.
        higher_is_better: False for losses.
        window: scores are first smoothed by a trailing mean over this many epochs
            (:func:`smooth_scores`), so one lucky epoch does not count as reaching the target.
    """
    smoothed = smooth_scores(scores, window) if window > 1 else list(scores)
    for e, t, s in zip(epochs, seconds, smoothed, strict=True):
        if s is None or not np.isfinite(s):
            continue
        if (s >= target - 1e-12) if higher_is_better else (s <= target + 1e-12):
            return Convergence(float(target), int(e), float(t))
    return Convergence(float(target), None, None)


def censored_median(times: Sequence[float | None], limits: Sequence[float]) -> float | None:
    """Kaplan-Meier median of times to an event, where ``None`` means "not by ``limits[i]``" (censored).

    The median is the first time by which half the runs had reached the event (the product-limit
    estimate of the share still waiting falls to 0.5 or below). Runs that never got there count as
    still waiting up to their limit instead of being dropped, so an arm that reaches a target in 2 of 5
    seeds has no median (``None``) rather than the median of its 2 successes.
    """
    if len(times) != len(limits):
        raise ValueError(f"{len(times)} times but {len(limits)} limits")
    events = sorted(
        ((float(t), 0) if t is not None else (float(lim), 1) for t, lim in zip(times, limits, strict=True)),
        key=lambda e: (e[0], e[1]),  # at a tie, events happen before censoring
    )
    at_risk, surviving = len(events), 1.0
    i = 0
    while i < len(events):
        t = events[i][0]
        j = i
        while j < len(events) and events[j][0] == t:
            j += 1
        n_events = sum(1 for e in events[i:j] if e[1] == 0)
        if n_events:
            surviving *= 1.0 - n_events / at_risk
            if surviving <= 0.5 + 1e-12:
                return t
        at_risk -= j - i
        i = j
    return None
