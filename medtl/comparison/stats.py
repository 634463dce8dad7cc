"""Statistics for comparing arms: intervals over seeds and the paired difference over seeds and patients.

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

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats as _sps

from medtl.bootstrap import MetricInterval, bootstrap_intervals, cluster_resample_counts
from medtl.comparison.convergence import Convergence, censored_median, convergence, plateau, smooth_scores
from medtl.comparison.delong import DeLongResult, delong_test
from medtl.comparison.patient_values import PatientValues
from medtl.comparison.patients import (
    METRIC_NAMES,
    METRICS,
    PatientPredictions,
    aggregate_by_patient,
    binary_auroc,
    compute_metric,
    weighted_metric,
)
from medtl.utils import look_up_option

__all__ = [
    "MIN_SEEDS_FOR_VERDICT",
    "METRIC_NAMES",
    "METRICS",
    "MeanCI",
    "MetricInterval",
    "RepeatedMean",
    "PatientPredictions",
    "PatientValues",
    "PatientData",
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
    "bootstrap_intervals",
    "repeated_mean",
    "fold_ratio",
    "seeds_needed",
    "holm_adjust",
    "simultaneous_interval",
    "convergence",
    "smooth_scores",
    "plateau",
    "censored_median",
]

#: Below this many seeds per arm, training noise cannot be told apart from an effect: no verdict.
MIN_SEEDS_FOR_VERDICT = 3


class PatientData(Protocol):
    """What a run contributes to a paired difference: its test predictions, one unit per patient, as its task
    aggregates them (:meth:`medtl.tasks.base.Task.patient_units`): per-patient class probabilities
    (classification; the metric is computed over the patients), per-patient metric values (segmentation; the
    metric is their mean), and so on. ``weighted(metric, counts)`` gives the metric on every bootstrap resample at
    once."""

    patient_id: np.ndarray

    def __len__(self) -> int: ...

    @property
    def metric_names(self) -> tuple[str, ...]: ...

    @property
    def strata(self) -> np.ndarray | None: ...

    def metric(self, name: str) -> float: ...

    def weighted(self, name: str, counts: np.ndarray) -> np.ndarray: ...

    def n_left_out(self, name: str) -> int: ...

    def delong_scores(self, name: str) -> tuple[np.ndarray, np.ndarray] | None: ...

    def same_units(self, other: Any) -> bool: ...

    def align(self, other: Any) -> tuple[Any, Any]: ...

    def to_dict(self) -> dict[str, Any]: ...


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


def mean_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
    fold_ratio: float = 0.0,
) -> MeanCI:
    """Mean and t-interval of ``values`` (one value per seed); non-finite values are dropped.

    With a single value the interval is undefined and reported as ``nan``; with zero spread it
    collapses onto the mean. ``bounds`` clips the interval to the metric's range (with 2-3 seeds a
    t-interval of an AUROC easily runs past 1). With values of cross-validation folds, ``fold_ratio``
    (:func:`fold_ratio`) widens the variance of the mean from ``sd**2 / n`` to ``sd**2 * (1 / n + fold_ratio)``
    (Nadeau and Bengio's corrected resampled t: the folds' training sets overlap).
    """
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(mean, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd * math.sqrt(1.0 / n + fold_ratio)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanCI(mean, low, high, n, sd)


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
    counts = cluster_resample_counts(clusters, strata=strata, n_resamples=n_resamples, seed=seed)
    units = np.arange(counts.shape[1])
    out = np.asarray([statistic(np.repeat(units, row)) for row in counts], dtype=float)
    return out[np.isfinite(out)]


# ------------------------------------------------------------------------------- paired difference


#: how :func:`paired_difference` makes its interval, in words: over seeds on one split, and over folds
SEEDS_METHOD = "t-interval over seeds with the shared patient variance (patient bootstrap)"
FOLDS_METHOD = (
    "corrected resampled t-interval over folds (Nadeau and Bengio 2003: the fold variance times 1/k + n_left_out / "
    "n_train) with the shared patient variance (patient bootstrap)"
)


def fold_ratio(n_folds: int) -> float:
    """Nadeau and Bengio's ``n_test / n_train`` for ``k``-fold cross-validation: each fold trains on ``k - 1`` parts
    and leaves one out, so ``1 / (k - 1)``; 0 for fewer than two folds (no cross-validation)."""
    return 1.0 / (n_folds - 1) if n_folds >= 2 else 0.0


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
        fold_ratio: 0 when the repetitions are seeds on one split; for cross-validation folds, Nadeau and Bengio's
            ratio of the patients a fold leaves out of training to those it trains on (``1 / (k - 1)``), by which
            the seed variance term is widened (see :func:`paired_difference`).
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
    method: str = SEEDS_METHOD
    fold_ratio: float = 0.0

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


def _combine(
    seed_sd: float,
    shared_var: float,
    n_seeds: int,
    n_patients: int,
    fold_ratio: float = 0.0,
    patient_var: float = 0.0,
) -> tuple[float, float]:
    """Standard error and degrees of freedom of the seed-averaged difference.

    ``se**2 = seed_sd**2 / k + shared_var``; with repetitions that are cross-validation folds (their training sets
    overlap), ``se**2 = seed_sd**2 * (1 / k + fold_ratio) + shared_var``, Nadeau and Bengio's correction
    (:func:`paired_difference`). The degrees of freedom are Welch-Satterthwaite's for the
    two parts (``k - 1`` for the seed part, ``n_patients - 1`` for the patient part), but computed with
    the seed variance at the upper end of its 50% confidence interval rather than at its estimate: with
    3 seeds the plug-in value is too often small by chance, which raises the degrees of freedom just when
    the standard error is too small, and the interval then claimed a difference in 8-10% of simulated
    comparisons of equal arms (100 test patients) instead of 5%. The standard error itself is unchanged.

    **Seeds that agree exactly** (``seed_sd = 0``: a few test patients give a metric few distinct values, and every
    seed can land on the same one) say nothing of the patient noise that differs between seeds, which ``seed_sd``
    otherwise carries: ``se**2`` is then ``patient_var`` (the patient bootstrap variance of the seed mean itself)
    where that is larger, with the patients' degrees of freedom, rather than the shared part alone (often
    0). Only exact agreement is treated so: applied to every comparison, this floor took the false verdicts of
    ``tests/comparison/test_calibration.py`` without training noise from 3.5-6.2% to 1.8-4.3%, and a true +0.1 AUROC
    with 40 test patients and 3 seeds was found in 28% of comparisons instead of 35%.
    """
    a = seed_sd**2 * (1.0 / n_seeds + fold_ratio)  # training noise (plus the seed-specific part of patient noise)
    c = max(shared_var, 0.0)  # patient noise common to every seed
    if a <= 1e-14 and np.isfinite(patient_var) and patient_var > c:
        c = patient_var
    var = a + c
    if not np.isfinite(var):
        return math.nan, math.nan
    if var <= 1e-14:
        return 0.0, math.nan
    a_up = a * (n_seeds - 1) / float(_sps.chi2.ppf(_SEED_VARIANCE_QUANTILE, n_seeds - 1)) if n_seeds > 1 else 0.0
    den = (a_up**2 / (n_seeds - 1) if n_seeds > 1 else 0.0) + c**2 / max(n_patients - 1, 1)
    df = (a_up + c) ** 2 / den if den > 0 else math.inf
    return math.sqrt(var), df


def paired_difference(
    a: PatientData | Sequence[PatientData],
    b: PatientData | Sequence[PatientData],
    metric: str = "auroc",
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    fold_ratio: float = 0.0,
) -> PairedDifference:
    """Difference ``metric(a) - metric(b)`` on the patients both arms predicted, over seeds and patients.

    ``a`` and ``b`` are lists with one entry per seed, paired by position (a single
    :class:`PatientPredictions` or :class:`PatientValues` is one seed). For classification the metric is
    computed over the patients' probabilities; for segmentation it is the mean over patients of per-patient
    values (Dice, HD95 in mm, ...; per foreground class, then over the classes; patients where a value is
    undefined are left out of that arm's mean, in every resample alike). The difference is the mean of the
    per-seed differences ``d_s``. It varies for two reasons: each training run's quality varies by seed, and
    the test patients are a sample. Both count:

    ``se**2 = seed_sd**2 / k + shared``

    where ``seed_sd`` is the SD of the ``k`` per-seed differences and ``shared`` is the patient variance
    common to all seeds: the mean covariance between different seeds' differences over a patient
    bootstrap (patients drawn with replacement, within each class for classification; the metric is
    evaluated on every resample). Patient noise that differs between seeds already shows in ``seed_sd``, so only
    the shared part is added; nothing is counted twice. Seeds that agree exactly (``seed_sd = 0``) do not make the
    patients' sampling disappear: ``se`` is then ``patient_se`` (:func:`_combine`). The interval is ``d ± t * se``
    and the p-value the two-sided t-test of ``d / se`` with the same degrees of freedom (Welch-Satterthwaite over the
    two parts, made conservative as :func:`_combine` explains), so interval and p-value come from one
    procedure and never disagree.

    Why not a two-level bootstrap (seeds, then patients): with the 3-5 seeds a comparison affords,
    resampling seeds sees a handful of distinct means and understates their spread (a normal quantile
    where a t-quantile with 2-4 degrees of freedom is needed). In the simulation of
    ``tests/comparison/test_calibration.py`` its percentile interval gave 8-12% false verdicts when the
    between-seed SD was 0.107 AUROC (4-7% at 0.056); this interval stayed at or under about 6% in
    every setting. A patient-only interval, which ignores training noise, gave 8-18% (SD 0.056) and
    19-43% (SD 0.107).

    **Folds instead of seeds** (``compare.repeat: folds``; ``fold_ratio > 0``): each repetition is a model trained on
    another cross-validation fold, tested on the same held-out test patients. Two folds share ``(k - 2) / (k - 1)``
    of their training patients, so their differences are positively correlated and ``seed_sd**2 / k`` understates
    the variance of their mean. The training part is then widened as in Nadeau and Bengio's corrected resampled
    t-test (Machine Learning 52, 2003; Bouckaert and Frank 2004 for repeated folds):
    ``se**2 = seed_sd**2 * (1 / k + fold_ratio) + shared`` with ``fold_ratio = n_left_out / n_train = 1 / (k - 1)``
    (:func:`fold_ratio`) and ``k`` the number of repetitions (folds, or seeds x folds). The correction assumes the
    correlation between two folds' results is about ``n_left_out / n``, which holds when the fold-to-fold spread is
    mostly training noise rather than which patients trained the model; ``tests/comparison/test_cv_calibration.py``
    simulates both and says where it holds (README, "Cross-validation").

    With one seed the interval is undefined (``nan``): training noise cannot be estimated. With fewer
    than :data:`MIN_SEEDS_FOR_VERDICT` seeds the interval is computed but no verdict is allowed
    (:attr:`PairedDifference.verdict_allowed`). A zero standard error (every seed and every resample of patients
    gave the same difference: identical arms, constant outputs) is "not estimable", never p = 0. For binary AUROC,
    DeLong's test is run on the seed-averaged scores as a second opinion.
    """
    list_a = list(a) if isinstance(a, list | tuple) else [a]
    list_b = list(b) if isinstance(b, list | tuple) else [b]
    if len(list_a) != len(list_b):
        raise ValueError(f"{len(list_a)} prediction sets for a but {len(list_b)} for b; they must pair up")
    nan = math.nan
    if not list_a:
        return PairedDifference(
            metric, nan, nan, nan, nan, nan, nan, 0, 0, None, 0, confidence=confidence, fold_ratio=fold_ratio
        )
    ref = list_a[0]
    if any(type(p) is not type(ref) for p in list_a + list_b):
        raise ValueError("a and b must hold the same kind of per-patient data (the units of one task)")
    metric = look_up_option(metric, ref.metric_names, what="metric")
    if not all(ref.same_units(p) for p in list_a[1:] + list_b):
        # restrict every set to the units all of them share, in one order
        for p in list_a[1:] + list_b:
            ref, _ = ref.align(p)
        list_a = [ref.align(p)[1] for p in list_a]
        list_b = [ref.align(p)[1] for p in list_b]
    k = len(list_a)
    if len(ref) == 0:
        return PairedDifference(
            metric, nan, nan, nan, nan, nan, nan, 0, 0, None, k, confidence=confidence, fold_ratio=fold_ratio
        )
    n_patients = len(set(ref.patient_id.tolist()))
    # row 0: every unit once, the observed data (equal to compute_metric, which the tests check); then the resamples
    counts = np.vstack(
        [
            np.ones((1, len(ref)), dtype=np.int64),
            cluster_resample_counts(ref.patient_id, strata=ref.strata, n_resamples=n_resamples, seed=seed),
        ]
    )
    va = np.stack([p.weighted(metric, counts) for p in list_a], axis=1)
    vb = np.stack([p.weighted(metric, counts) for p in list_b], axis=1)
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
        se, df = _combine(seed_sd, shared_var, k, n_patients, fold_ratio, patient_var=patient_se**2)
        if se > 0:
            tcrit = float(_sps.t.ppf(0.5 + confidence / 2, df))
            low, high = d - tcrit * se, d + tcrit * se
            p_value = float(min(1.0, 2 * _sps.t.sf(abs(d) / se, df)))
    dl = None
    paired = ref.delong_scores(metric)
    if paired is not None:
        mean_a = np.mean([p.delong_scores(metric)[1] for p in list_a], axis=0)
        mean_b = np.mean([p.delong_scores(metric)[1] for p in list_b], axis=0)
        dl = delong_test(paired[0], mean_a, mean_b, confidence=confidence)
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
        FOLDS_METHOD if fold_ratio > 0 else SEEDS_METHOD,
        float(fold_ratio),
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


# ------------------------------------------------------------------------------- many arms, one family


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) of one family of tests.

    Sorted ascending, the ``i``-th smallest of ``m`` p-values (``i`` from 0) becomes ``(m - i) * p``, made
    non-decreasing along the order and capped at 1; a hypothesis is rejected at family-wise level ``alpha`` exactly
    when its adjusted p-value is below ``alpha``, which keeps the probability of any false rejection at or under
    ``alpha`` whatever the dependence between the tests. Non-finite p-values (tests that could not be made) stay
    ``nan`` and are not counted in ``m``.

    Args:
        p_values: the unadjusted p-values, in any order.

    Returns:
        The adjusted p-values, in the order given.
    """
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    running = 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out


def simultaneous_interval(
    d: PairedDifference, family_size: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """The Bonferroni interval of ``d`` in a family of ``family_size`` tests: the t-interval of
    :func:`paired_difference` (same standard error and degrees of freedom) at level ``1 - (1 - confidence) / m``, so
    that all ``m`` intervals together cover their true differences with probability at least ``confidence``. It
    excludes 0 exactly when ``m * p < 1 - confidence``; Holm's step-down (:func:`holm_adjust`) rejects whenever that
    holds, and sometimes when it does not (then Holm's verdict stands and this interval still holds 0).

    Returns:
        ``(low, high, level)``; ``nan`` bounds when ``d`` is not estimable. With ``m = 1`` the interval is ``d``'s own.
    """
    m = max(int(family_size), 1)
    level = 1.0 - (1.0 - confidence) / m
    if not d.estimable:
        return math.nan, math.nan, level
    if m == 1 and abs(d.confidence - confidence) < 1e-12:
        return float(d.low), float(d.high), level
    half = float(_sps.t.ppf(0.5 + level / 2, d.df)) * d.se
    return d.difference - half, d.difference + half, level


# ------------------------------------------------------------------------------ one arm, one run


@dataclass(frozen=True)
class RepeatedMean:
    """The mean of one arm's test metric over its repetitions (seeds or folds) on the same test patients, with an
    interval over repetitions and patients (:func:`repeated_mean`).

    Attributes:
        metric: the metric.
        mean: mean over the repetitions.
        low: lower bound of the interval (``nan`` with one repetition); ``high`` likewise.
        n: repetitions.
        sd: SD of the per-repetition values.
        patient_se: the patient bootstrap SE shared by every repetition (counted once).
        se: standard error of ``mean``.
        df: degrees of freedom of the t-interval.
        per_repetition: the per-repetition values.
        n_patients: test patients.
        fold_ratio: Nadeau and Bengio's term (0 for seeds on one split; see :func:`paired_difference`).
        confidence: level of the interval.
    """

    metric: str
    mean: float
    low: float
    high: float
    n: int
    sd: float
    patient_se: float
    se: float
    df: float
    per_repetition: tuple[float, ...]
    n_patients: int
    fold_ratio: float = 0.0
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_repetition"] = list(self.per_repetition)
        return d


def repeated_mean(
    runs: Sequence[PatientData],
    metric: str,
    *,
    fold_ratio: float = 0.0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
) -> RepeatedMean:
    """Mean of ``metric`` over runs of one arm tested on the same patients, with the interval
    :func:`paired_difference` gives a difference: ``se**2 = sd**2 * (1 / k + fold_ratio) + shared``, ``sd`` the SD of
    the per-run values, ``shared`` the patient bootstrap variance common to all runs (the bootstrap variance of the
    mean itself when every run scored alike), a t-interval with the degrees of freedom of :func:`_combine`. With
    ``fold_ratio = 1 / (k - 1)`` (folds: :func:`fold_ratio`) it is the corrected resampled t of Nadeau and Bengio;
    ``bounds`` clips the interval to the metric's range.
    """
    units = list(runs)
    nan = math.nan
    k = len(units)
    if k == 0:
        return RepeatedMean(metric, nan, nan, nan, 0, nan, nan, nan, nan, (), 0, fold_ratio, confidence)
    ref = units[0]
    metric = look_up_option(metric, ref.metric_names, what="metric")
    if not all(ref.same_units(u) for u in units[1:]):
        for u in units[1:]:
            ref, _ = ref.align(u)
        units = [ref.align(u)[1] for u in units]
    n_patients = len({str(p) for p in ref.patient_id})
    if len(ref) == 0:
        return RepeatedMean(metric, nan, nan, nan, k, nan, nan, nan, nan, (), 0, fold_ratio, confidence)
    counts = np.vstack(
        [
            np.ones((1, len(ref)), dtype=np.int64),
            cluster_resample_counts(ref.patient_id, strata=ref.strata, n_resamples=n_resamples, seed=seed),
        ]
    )
    values = np.stack([u.weighted(metric, counts) for u in units], axis=1)
    per = values[0]
    mean = float(np.mean(per))
    boot = values[1:][np.isfinite(values[1:]).all(axis=1)]
    patient_se = shared = sd = se = df = low = high = nan
    mean_var = 0.0
    if boot.shape[0] >= 2 and np.isfinite(mean):
        cov = np.atleast_2d(np.cov(boot, rowvar=False))
        shared = float((cov.sum() - np.trace(cov)) / (k * (k - 1))) if k >= 2 else nan
        patient_se = math.sqrt(max(shared, 0.0)) if np.isfinite(shared) else nan
        mean_var = max(float(cov.mean()), 0.0)
    if k >= 2 and np.isfinite(shared):
        sd = float(np.std(per, ddof=1))
        se, df = _combine(sd, shared, k, n_patients, fold_ratio, patient_var=mean_var)
        if se > 0:
            half = float(_sps.t.ppf(0.5 + confidence / 2, df)) * se
            low, high = mean - half, mean + half
            if bounds is not None:
                low, high = max(low, bounds[0]), min(high, bounds[1])
        elif se == 0:
            low = high = mean
    return RepeatedMean(
        metric,
        mean,
        float(low),
        float(high),
        k,
        sd,
        patient_se,
        float(se),
        float(df),
        tuple(float(v) for v in per),
        n_patients,
        float(fold_ratio),
        confidence,
    )
