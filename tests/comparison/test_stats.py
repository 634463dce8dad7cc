"""medtl.comparison.stats against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medtl.comparison import stats as st
from medtl.comparison.stats import (
    aggregate_by_patient,
    binary_auroc,
    censored_median,
    cluster_bootstrap,
    cluster_resample_counts,
    compute_metric,
    convergence,
    delong_test,
    mean_ci,
    paired_difference,
    plateau,
    repeated_mean,
    seeds_needed,
    smooth_scores,
    weighted_metric,
)
from medtl.metric_specs import metrics_for_task


def slow_delong(labels, scores_a, scores_b):
    """DeLong et al. (1988) from the definition: placement values with the O(m*n) kernel psi."""
    y = np.asarray(labels).astype(bool)
    out = []
    for s in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        x, z = s[y], s[~y]
        psi = np.array([[1.0 if xi > zj else 0.5 if xi == zj else 0.0 for zj in z] for xi in x])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (a1, v10a, v01a), (a2, v10b, v01b) = out
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.stack([v10a, v10b]))
    s01 = np.cov(np.stack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (a1 - a2) / math.sqrt(var)
    return a1, a2, math.sqrt(var), 2 * sps.norm.sf(abs(z))


@pytest.fixture
def binary_case():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    a = y * 0.9 + rng.normal(0, 0.7, 80)
    b = y * 0.4 + rng.normal(0, 0.7, 80)
    # ties inside and across classes
    a = np.round(a, 1)
    b = np.round(b, 1)
    return y, a, b


def seeds_of(rng, pids, y, strength, k, noise=0.3, arm_noise=0.0):
    """k seeds of one arm; ``arm_noise`` is patient noise shared by the arm's seeds."""
    shared = rng.normal(0, arm_noise, len(y)) if arm_noise else 0.0
    return [
        aggregate_by_patient(pids, y, np.clip(y * strength + shared + rng.normal(0.3, noise, len(y)), 0, 1))
        for _ in range(k)
    ]


def test_mean_ci_matches_scipy_t_interval():
    x = [0.71, 0.78, 0.74, 0.69]
    r = mean_ci(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert r.mean == pytest.approx(np.mean(x))
    assert (r.low, r.high) == pytest.approx((low, high))
    assert r.n == 4
    one = mean_ci([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([0.5, 0.5, 0.5]).low == pytest.approx(0.5)
    assert mean_ci([float("nan"), 0.6, 0.8]).n == 2


def test_auroc_is_the_mann_whitney_statistic_with_ties(binary_case):
    y, a, _ = binary_case
    u = sps.mannwhitneyu(a[y == 1], a[y == 0]).statistic  # ties count one half
    assert binary_auroc(y, a) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    assert math.isnan(binary_auroc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_metric_names_are_the_training_metrics():
    from medtl.train import metrics as train_metrics

    names = set(metrics_for_task("classification"))
    assert set(st.METRIC_NAMES) == names == set(st.METRICS) == set(train_metrics.METRICS)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], 30)
    y = rng.integers(0, 3, 30)
    for name in st.METRIC_NAMES:  # one implementation: the very same numbers
        assert compute_metric(name, y, probs) == train_metrics.compute_metric(name, y, probs)
        assert st.METRICS[name](y, probs) == train_metrics.METRICS[name](y, probs)
    with pytest.raises(ValueError, match="auroc"):
        compute_metric("aroc", y, probs)


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_weighted_metrics_equal_the_metric_on_the_expanded_resample(n_classes):
    """The bootstrap kernel against scikit-learn on the data set each resample stands for."""
    rng = np.random.default_rng(n_classes)
    n = 45
    y = rng.integers(0, n_classes, n)
    if n_classes == 4:
        y[y == 3] = 2  # class 3 absent from the labels (and maybe predicted)
    probs = rng.dirichlet(np.ones(n_classes), n)
    probs[np.arange(n), y] += 0.3 * rng.random(n)
    probs = np.round(probs / probs.sum(axis=1, keepdims=True), 2)  # ties
    counts = rng.poisson(1.0, (25, n))
    counts[0] = 1
    for name in st.METRIC_NAMES:
        fast = weighted_metric(name, y, probs, counts)
        for b in range(counts.shape[0]):
            idx = np.repeat(np.arange(n), counts[b])
            expected = compute_metric(name, y[idx], probs[idx])
            if math.isnan(expected):
                assert math.isnan(fast[b]), (name, b)
            else:
                assert fast[b] == pytest.approx(expected, abs=1e-12), (name, b)


def test_weighted_auroc_equals_sklearn_sample_weight(binary_case):
    y, a, _ = binary_case
    w = np.random.default_rng(1).integers(0, 4, (3, y.size))
    probs = np.stack([1 - a, a], axis=1)
    for row, value in zip(w, weighted_metric("auroc", y, probs, w), strict=True):
        assert value == pytest.approx(roc_auc_score(y, a, sample_weight=row), abs=1e-12)


def test_delong_matches_definition(binary_case):
    y, a, b = binary_case
    fast = delong_test(y, a, b)
    a1, a2, se, p = slow_delong(y, a, b)
    assert fast.auc_a == pytest.approx(a1) and fast.auc_a == pytest.approx(roc_auc_score(y, a))
    assert fast.auc_b == pytest.approx(a2)
    assert fast.se == pytest.approx(se)
    assert fast.p_value == pytest.approx(p)
    assert fast.low < fast.difference < fast.high
    assert 0 < fast.p_value < 1 and fast.estimable


def test_delong_with_zero_standard_error_is_not_estimable(binary_case):
    y, a, _ = binary_case
    for same in (delong_test(y, a, a), delong_test(y, np.full(y.size, 0.5), np.full(y.size, 0.3))):
        assert same.difference == 0 and same.se == 0 and not same.estimable
        assert math.isnan(same.p_value) and math.isnan(same.low) and math.isnan(same.high)
        assert same.to_dict()["estimable"] is False


def test_bootstrap_matches_scipy_on_paired_mean_difference():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.0, 150)
    z = x + rng.normal(0.3, 0.5, 150)
    ours = cluster_bootstrap(lambda i: float(np.mean(z[i] - x[i])), np.arange(150), n_resamples=4000, seed=2)
    ref = sps.bootstrap(
        (z, x),
        lambda zz, xx, axis=-1: np.mean(zz - xx, axis=axis),
        paired=True,
        n_resamples=4000,
        method="percentile",
        random_state=5,
    )
    lo, hi = np.quantile(ours, [0.025, 0.975])
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.012)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.012)
    assert np.std(ours) == pytest.approx(ref.standard_error, rel=0.08)


def test_resample_counts_keep_clusters_whole_and_strata_sized():
    clusters = ["a", "a", "b", "c", "c", "c", "d", "e"]
    strata = [0, 0, 0, 1, 1, 1, 1, 0]  # clusters a, b, e in stratum 0; c, d in stratum 1
    counts = cluster_resample_counts(clusters, strata=strata, n_resamples=500, seed=3)
    assert counts.shape == (500, 8)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 5]).all()
    per_cluster = counts[:, [0, 2, 3, 6, 7]]
    assert (per_cluster[:, [0, 1, 4]].sum(axis=1) == 3).all() and (per_cluster[:, [2, 3]].sum(axis=1) == 2).all()
    assert per_cluster.mean() == pytest.approx(1.0, abs=0.1)


def test_paired_difference_resamples_patients_not_images():
    rng = np.random.default_rng(4)
    n, k = 60, 3
    pids = [f"p{i}" for i in range(n)]
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    sa = [np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, n), 0, 1) for _ in range(k)]
    sb = [np.clip(0.5 + (y - 0.5) * 0.1 + rng.normal(0, 0.2, n), 0, 1) for _ in range(k)]
    one_a = [aggregate_by_patient(pids, y, s) for s in sa]
    one_b = [aggregate_by_patient(pids, y, s) for s in sb]
    # each patient scanned 5 times with the same prediction: identical evidence, identical answer
    rep = 5
    five_a = [aggregate_by_patient(np.repeat(pids, rep), np.repeat(y, rep), np.repeat(s, rep)) for s in sa]
    five_b = [aggregate_by_patient(np.repeat(pids, rep), np.repeat(y, rep), np.repeat(s, rep)) for s in sb]
    r1 = paired_difference(one_a, one_b, "auroc", n_resamples=500, seed=0)
    r5 = paired_difference(five_a, five_b, "auroc", n_resamples=500, seed=0)
    assert (r1.difference, r1.low, r1.high, r1.p_value, r1.patient_se) == (
        r5.difference,
        r5.low,
        r5.high,
        r5.p_value,
        r5.patient_se,
    )
    assert r5.n_patients == n and five_a[0].n_images.tolist() == [rep] * n
    expected = np.mean([roc_auc_score(y, a) - roc_auc_score(y, b) for a, b in zip(sa, sb, strict=True)])
    assert r1.difference == pytest.approx(expected, abs=1e-12)
    assert r1.low > 0 and r1.significant and r1.p_value < 0.05


def test_paired_difference_components_against_an_independent_computation():
    """seed SD, patient SE, shared patient SE, SE, interval and p recomputed with scikit-learn."""
    rng = np.random.default_rng(7)
    n, k = 40, 4
    pids = [f"p{i}" for i in range(n)]
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    arm_a = seeds_of(rng, pids, y, 0.5, k, noise=0.2, arm_noise=0.25)
    arm_b = seeds_of(rng, pids, y, 0.3, k, noise=0.2, arm_noise=0.25)
    r = paired_difference(arm_a, arm_b, "auroc", n_resamples=80, seed=5)
    y = arm_a[0].labels  # units are sorted by patient ID
    per_seed = [roc_auc_score(y, a.scores) - roc_auc_score(y, b.scores) for a, b in zip(arm_a, arm_b, strict=True)]
    assert r.per_seed == pytest.approx(per_seed, abs=1e-12)
    assert r.difference == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert r.seed_sd == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    # the same resamples (same seed), scored by scikit-learn on the expanded index sets
    counts = cluster_resample_counts(arm_a[0].patient_id, strata=y, n_resamples=80, seed=5)
    boot = np.array(
        [
            [
                roc_auc_score(y[idx], a.scores[idx]) - roc_auc_score(y[idx], b.scores[idx])
                for a, b in zip(arm_a, arm_b, strict=True)
            ]
            for idx in (np.repeat(np.arange(n), row) for row in counts)
        ]
    )
    assert r.n_resamples == 80
    assert r.patient_se == pytest.approx(np.std(boot.mean(axis=1), ddof=1), rel=1e-9)
    cov = np.cov(boot, rowvar=False)
    shared = (cov.sum() - np.trace(cov)) / (k * (k - 1))
    assert shared > 0
    assert r.shared_patient_se == pytest.approx(math.sqrt(shared), rel=1e-9)
    assert r.se == pytest.approx(math.sqrt(np.var(per_seed, ddof=1) / k + shared), rel=1e-9)
    assert r.seed_sd > 0 and r.df >= k - 1
    t = sps.t.ppf(0.975, r.df)
    assert (r.low, r.high) == pytest.approx((r.difference - t * r.se, r.difference + t * r.se), abs=1e-12)
    assert r.p_value == pytest.approx(2 * sps.t.sf(abs(r.difference) / r.se, r.df), abs=1e-12)
    mean_a = np.mean([p.scores for p in arm_a], 0)
    mean_b = np.mean([p.scores for p in arm_b], 0)
    assert r.delong.auc_a == pytest.approx(roc_auc_score(y, mean_a))
    assert r.delong.auc_b == pytest.approx(roc_auc_score(y, mean_b))
    with pytest.raises(ValueError, match="pair up"):
        paired_difference(arm_a, arm_b[:2])


def test_interval_and_p_value_never_disagree():
    rng = np.random.default_rng(8)
    n = 50
    pids = [f"p{i}" for i in range(n)]
    y = np.r_[np.zeros(25, int), np.ones(25, int)]
    seen = set()
    for trial in range(60):
        k = int(rng.integers(2, 6))
        a = seeds_of(rng, pids, y, rng.uniform(0.1, 0.6), k, noise=rng.uniform(0.2, 0.4))
        b = seeds_of(rng, pids, y, rng.uniform(0.1, 0.6), k, noise=rng.uniform(0.2, 0.4))
        for metric in ("auroc", "accuracy"):
            r = paired_difference(a, b, metric, n_resamples=200, seed=trial)
            excludes = r.low > 0 or r.high < 0
            assert excludes == (r.p_value < 0.05), (trial, metric, r.low, r.high, r.p_value)
            seen.add(excludes)
    assert seen == {True, False}  # both kinds of outcome occurred


def test_identical_arms_are_not_estimable_and_one_seed_has_no_interval():
    rng = np.random.default_rng(9)
    pids = [f"p{i}" for i in range(30)]
    y = np.arange(30) % 2
    arm = seeds_of(rng, pids, y, 0.4, 3)
    same = paired_difference(arm, arm, "auroc", n_resamples=200)
    assert same.difference == 0 and same.se == 0 and not same.estimable and not same.significant
    assert math.isnan(same.low) and math.isnan(same.p_value) and not same.delong.estimable
    one = paired_difference(arm[0], seeds_of(rng, pids, y, 0.1, 1)[0], "auroc", n_resamples=200)
    assert one.n_seeds == 1 and math.isnan(one.seed_sd) and math.isnan(one.low) and not one.verdict_allowed
    assert one.patient_se > 0  # the patient part is still reported


def test_seeds_that_agree_by_chance_keep_the_patients_sampling_noise():
    """Eight test patients give AUROC few values: three seeds can score exactly alike (seed SD 0) while resampling
    the patients still moves the difference. The standard error is then the bootstrap SE of the seed mean (with
    the patients' degrees of freedom), not 0 and not "not estimable"; identical arms stay not estimable."""
    pids = [f"p{i}" for i in range(8)]
    y = np.arange(8) % 2
    perfect = aggregate_by_patient(pids, y, np.where(y == 1, 0.9, 0.1))
    # each seed misorders another positive-negative pair: AUROC 15/16 every time, from different patients
    weak = []
    for s in range(3):
        scores = np.where(y == 1, 0.8, 0.2)
        pos, neg = np.flatnonzero(y == 1)[s], np.flatnonzero(y == 0)[s]
        scores[pos], scores[neg] = 0.3, 0.7
        weak.append(aggregate_by_patient(pids, y, scores))
    d = paired_difference([perfect] * 3, weak, "auroc", n_resamples=400, seed=1)
    assert d.per_seed == pytest.approx((1 / 16,) * 3) and d.seed_sd == 0
    assert d.shared_patient_se < d.patient_se  # the seed-specific part of the patient noise is not shared
    assert d.patient_se > 0.02 and d.se == pytest.approx(d.patient_se) and d.df == pytest.approx(7)
    t = sps.t.ppf(0.975, 7)
    assert (d.low, d.high) == pytest.approx((1 / 16 - t * d.se, 1 / 16 + t * d.se))
    assert d.estimable and d.verdict_allowed and d.low < 0 < d.high
    # a mean over runs that agree is widened the same way
    m = repeated_mean(weak, "auroc", n_resamples=400, seed=1)
    assert m.mean == pytest.approx(15 / 16) and m.low < 15 / 16 < m.high
    same = paired_difference(weak, weak, "auroc", n_resamples=400, seed=1)
    assert same.se == 0 and not same.estimable
    # two seeds that agree: no verdict, and no seed count extrapolated from a seed SD of 0
    from medtl.comparison.summary import _verdict

    two = paired_difference([perfect] * 2, weak[:2], "auroc", n_resamples=400, seed=1)
    assert two.seed_sd == 0 and not two.verdict_allowed
    sentence = _verdict("imagenet", "scratch", two, 1.0, 0.95)
    assert "no verdict" in sentence and "at least 3 seeds per arm" in sentence
    assert "50 seeds" not in sentence and "seeds per arm to be resolved" not in sentence


def test_multiclass_auroc_paired_difference():
    rng = np.random.default_rng(10)
    n, k = 60, 3
    pids = [f"p{i}" for i in range(n)]
    y = np.arange(n) % 3

    def arm(strength):
        out = []
        for _ in range(k):
            logits = rng.normal(size=(n, 3))
            logits[np.arange(n), y] += strength
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            out.append(aggregate_by_patient(pids, y, p))
        return out

    a, b = arm(2.0), arm(0.5)
    r = paired_difference(a, b, "auroc", n_resamples=300)
    ys = a[0].labels
    expected = np.mean(
        [
            roc_auc_score(ys, pa.probs, multi_class="ovr") - roc_auc_score(ys, pb.probs, multi_class="ovr")
            for pa, pb in zip(a, b, strict=True)
        ]
    )
    assert r.difference == pytest.approx(expected, abs=1e-12)
    assert r.delong is None and r.estimable and r.low > 0


def test_seeds_needed_is_where_the_interval_first_excludes_zero():
    k = seeds_needed(0.05, 0.08, 0.02, 80)
    assert k is not None and k > 3

    def half(k):
        se, df = st._combine(0.08, 0.02**2, k, 80)
        return sps.t.ppf(0.975, df) * se

    assert half(k) < 0.05 <= half(k - 1)
    # a test set too small for the difference: no number of seeds helps
    assert seeds_needed(0.03, 0.05, 0.03, 40) is None
    assert seeds_needed(0.3, 0.01, 0.01, 100) == 3


def test_aggregate_by_patient_means_scans():
    agg = aggregate_by_patient(["b", "a", "a", "b"], [1, 0, 0, 1], [[0.2, 0.8], [0.6, 0.4], [0.8, 0.2], [0.4, 0.6]])
    assert agg.patient_id.tolist() == ["a", "b"]
    assert agg.probs[:, 1] == pytest.approx([0.3, 0.7])
    assert agg.n_images.tolist() == [2, 2]
    # a patient with scans of two labels keeps one unit per label, counted once as a patient
    two = aggregate_by_patient(["a", "a", "b"], [0, 1, 1], [0.2, 0.9, 0.7])
    assert two.patient_id.tolist() == ["a", "a", "b"] and two.labels.tolist() == [0, 1, 1]


def test_convergence_hand_made():
    epochs = [1, 2, 3, 4]
    seconds = [10.0, 20.5, 31.0, 40.0]
    target = 0.70
    fast = convergence(epochs, seconds, [0.66, 0.71, 0.72, 0.75], target)
    assert (fast.epoch, fast.seconds, fast.reached) == (2, 20.5, True)
    never = convergence(epochs, seconds, [0.5, 0.6, 0.69, float("nan")], target)
    assert never.epoch is None and never.seconds is None and not never.reached
    assert convergence(epochs, seconds, [0.1, 0.2, 0.3, 0.70], target).epoch == 4
    assert convergence(epochs, seconds, [0.9, 0.5, 0.4, 0.3], 0.45, higher_is_better=False).epoch == 3
    # one lucky epoch does not count once the curve is smoothed over 3 epochs
    lucky = [0.5, 0.8, 0.5, 0.72, 0.74, 0.75]
    assert convergence(range(1, 7), range(6), lucky, target).epoch == 2
    assert convergence(range(1, 7), range(6), lucky, target, window=3).epoch == 6
    assert smooth_scores([0.3, float("nan"), 0.6, 0.9], 2) == pytest.approx(
        [0.3, float("nan"), 0.45, 0.75], nan_ok=True
    )
    assert plateau([0.1, 0.2, 0.3, 0.5, 0.6, 0.7]) == pytest.approx(0.65)
    assert plateau([0.4]) == 0.4 and math.isnan(plateau([float("nan")]))


def test_censored_median_is_kaplan_meier():
    # all reached: the first time by which half had (the lower median)
    assert censored_median([3, 1, 2, 5], [10] * 4) == 2
    # two of five never reached: still a median, since three of five did by epoch 6
    assert censored_median([2, None, 6, 4, None], [8] * 5) == 6
    # three of five never reached: no median ("not reached"), not the median of the two successes
    assert censored_median([2, None, None, 4, None], [8] * 5) is None
    # a run stopped early at epoch 3 without reaching: censored there, so later runs weigh more
    # KM: at 2, S = 3/4; censored at 3; at 5, S = 3/4 * (1 - 1/2) = 3/8 <= 0.5
    assert censored_median([2, None, 5, 7], [9, 3, 9, 9]) == 5
    # two runs stopped at epoch 1: KM gives 4 where "never = infinity" would give 6
    assert censored_median([None, None, 3, 4, 6], [1, 1, 9, 9, 9]) == 4
    with pytest.raises(ValueError):
        censored_median([1, 2], [3])
