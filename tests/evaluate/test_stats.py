"""medtl.evaluate.stats against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from medtl.evaluate.stats import (
    aggregate_by_patient,
    binary_auroc,
    cluster_bootstrap,
    compute_metric,
    convergence,
    delong_test,
    mean_ci,
    paired_difference,
)


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


def test_auroc_matches_sklearn_with_ties(binary_case):
    y, a, _ = binary_case
    assert binary_auroc(y, a) == pytest.approx(roc_auc_score(y, a))
    assert math.isnan(binary_auroc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], 60)
    y = rng.integers(0, 3, 60)
    pred = probs.argmax(1)
    assert compute_metric("auroc", y, probs) == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert compute_metric("accuracy", y, probs) == pytest.approx(accuracy_score(y, pred))
    assert compute_metric("balanced_accuracy", y, probs) == pytest.approx(balanced_accuracy_score(y, pred))
    assert compute_metric("f1", y, probs) == pytest.approx(f1_score(y, pred, average="macro"))
    yb = (y > 0).astype(int)
    pb = np.stack([1 - probs[:, 0], probs[:, 0]], 1)
    assert compute_metric("f1", yb, pb) == pytest.approx(f1_score(yb, pb.argmax(1)))
    with pytest.raises(ValueError, match="auroc"):
        compute_metric("aroc", y, probs)


def test_delong_matches_definition(binary_case):
    y, a, b = binary_case
    fast = delong_test(y, a, b)
    a1, a2, se, p = slow_delong(y, a, b)
    assert fast.auc_a == pytest.approx(a1) and fast.auc_a == pytest.approx(roc_auc_score(y, a))
    assert fast.auc_b == pytest.approx(a2)
    assert fast.se == pytest.approx(se)
    assert fast.p_value == pytest.approx(p)
    assert fast.low < fast.difference < fast.high
    assert 0 < fast.p_value < 1
    # the same classifier twice: no difference at all
    same = delong_test(y, a, a)
    assert same.difference == 0 and same.p_value == 1.0


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


def test_paired_difference_resamples_patients_not_images():
    rng = np.random.default_rng(4)
    n = 60
    pids = [f"p{i}" for i in range(n)]
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    sa = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, n), 0, 1)
    sb = np.clip(0.5 + (y - 0.5) * 0.1 + rng.normal(0, 0.2, n), 0, 1)
    one_a = aggregate_by_patient(pids, y, sa)
    one_b = aggregate_by_patient(pids, y, sb)
    # each patient scanned 5 times with the same prediction: identical evidence, identical answer
    rep = 5
    five_a = aggregate_by_patient(np.repeat(pids, rep), np.repeat(y, rep), np.repeat(sa, rep))
    five_b = aggregate_by_patient(np.repeat(pids, rep), np.repeat(y, rep), np.repeat(sb, rep))
    r1 = paired_difference(one_a, one_b, "auroc", n_resamples=500, seed=0)
    r5 = paired_difference(five_a, five_b, "auroc", n_resamples=500, seed=0)
    assert (r1.difference, r1.low, r1.high, r1.p_value) == (r5.difference, r5.low, r5.high, r5.p_value)
    assert r5.n_patients == n and five_a.n_images.tolist() == [rep] * n
    assert r1.difference == pytest.approx(roc_auc_score(y, sa) - roc_auc_score(y, sb))
    assert r1.low > 0 and r1.significant and r1.p_value < 0.05
    assert r1.delong is not None and r1.delong.difference == pytest.approx(r1.difference)
    # two arms that predict the same thing: CI straddles zero, p = 1
    r0 = paired_difference(one_a, one_a, "auroc", n_resamples=200)
    assert r0.difference == 0 and r0.low == 0 and r0.high == 0 and not r0.significant and r0.p_value == 1.0


def test_aggregate_by_patient_means_scans():
    agg = aggregate_by_patient(["b", "a", "a", "b"], [1, 0, 0, 1], [[0.2, 0.8], [0.6, 0.4], [0.8, 0.2], [0.4, 0.6]])
    assert agg.patient_id.tolist() == ["a", "b"]
    assert agg.probs[:, 1] == pytest.approx([0.3, 0.7])
    assert agg.n_images.tolist() == [2, 2]


def test_convergence_hand_made():
    epochs = [1, 2, 3, 4]
    seconds = [10.0, 20.5, 31.0, 40.0]
    scratch_best = max([0.55, 0.62, 0.70, 0.68])
    fast = convergence(epochs, seconds, [0.66, 0.71, 0.72, 0.75], scratch_best)
    assert (fast.epoch, fast.seconds, fast.reached) == (2, 20.5, True)
    never = convergence(epochs, seconds, [0.5, 0.6, 0.69, float("nan")], scratch_best)
    assert never.epoch is None and never.seconds is None and not never.reached
    exact = convergence(epochs, seconds, [0.1, 0.2, 0.3, 0.70], scratch_best)
    assert exact.epoch == 4
    loss = convergence(epochs, seconds, [0.9, 0.5, 0.4, 0.3], 0.45, higher_is_better=False)
    assert loss.epoch == 3


def test_paired_difference_over_seeds_averages_per_seed_differences():
    rng = np.random.default_rng(7)
    n = 40
    pids = [f"p{i}" for i in range(n)]
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    arms = {
        k: [aggregate_by_patient(pids, y, np.clip(y * w + rng.normal(0.3, 0.3, n), 0, 1)) for _ in range(3)]
        for k, w in (("a", 0.5), ("b", 0.1))
    }
    r = paired_difference(arms["a"], arms["b"], "auroc", n_resamples=300, seed=1)
    y = arms["a"][0].labels  # units are sorted by patient ID
    expected = np.mean(
        [roc_auc_score(y, pa.scores) - roc_auc_score(y, pb.scores) for pa, pb in zip(arms["a"], arms["b"], strict=True)]
    )
    assert r.difference == pytest.approx(expected)
    assert r.low <= r.difference <= r.high
    mean_a = np.mean([p.scores for p in arms["a"]], 0)
    mean_b = np.mean([p.scores for p in arms["b"]], 0)
    assert r.delong.auc_a == pytest.approx(roc_auc_score(y, mean_a))
    assert r.delong.auc_b == pytest.approx(roc_auc_score(y, mean_b))
    with pytest.raises(ValueError, match="pair up"):
        paired_difference(arms["a"], arms["b"][:2])


def test_mean_ci_bounds_clip_to_metric_range():
    r = mean_ci([0.95, 1.0], bounds=(0.0, 1.0))
    assert r.high == 1.0 and r.low < 0.95 and r.mean == pytest.approx(0.975)
