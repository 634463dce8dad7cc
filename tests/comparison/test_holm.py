"""Many arms: each arm against scratch and against ImageNet, Holm's adjustment, Bonferroni's intervals, the ranking
and what the report shows of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.many_arms import simulated_results
from scipy import stats as sps

from medtl.comparison.report import write_report
from medtl.comparison.stats import holm_adjust, paired_difference, simultaneous_interval
from medtl.comparison.summary import _verdict, summarize
from medtl.comparison.tables import also_table, ranking_table, summary_table


def test_holm_adjust_matches_a_hand_computation():
    # sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> kept at 0.06 (monotone)
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    np.testing.assert_allclose(holm_adjust(p), [0.03, 0.06, 0.06, 0.02, math.nan], equal_nan=True)
    # capped at 1; one test is its own p-value; nothing tested, nothing adjusted
    np.testing.assert_allclose(holm_adjust([0.6, 0.5]), [1.0, 1.0])
    assert holm_adjust([0.012])[0] == pytest.approx(0.012)
    assert np.isnan(holm_adjust([math.nan])).all() and holm_adjust([]).size == 0
    # ties keep their order and get the same adjusted value
    np.testing.assert_allclose(holm_adjust([0.02, 0.02, 0.5]), [0.06, 0.06, 0.5])


def test_simultaneous_interval_is_bonferronis_t_interval():
    rng = np.random.default_rng(4)
    res = simulated_results(rng, {"a": 0.12, "scratch": 0.0}, n_patients=80, seed_sd=0.03)
    a = [r.predictions for r in res.runs if r.arm == "a"]
    b = [r.predictions for r in res.runs if r.arm == "scratch"]
    d = paired_difference(a, b, "auroc", n_resamples=300)
    assert d.estimable
    assert simultaneous_interval(d, 1)[:2] == (d.low, d.high)  # one test: the test's own interval
    low, high, level = simultaneous_interval(d, 5)
    assert level == pytest.approx(0.99)
    half = sps.t.ppf(1 - 0.01 / 2, d.df) * d.se
    assert (low, high) == pytest.approx((d.difference - half, d.difference + half))
    assert high - low > d.high - d.low
    # it excludes 0 exactly when Bonferroni rejects: m * p < 0.05
    for m in (1, 2, 5, 20, 200):
        lo, hi, _ = simultaneous_interval(d, m)
        assert (lo > 0 or hi < 0) == (m * d.p_value < 0.05), m


@pytest.fixture(scope="module")
def four_arms():
    """scratch, ImageNet, a strong arm and one equal to scratch: 3 tests against scratch, 2 against ImageNet."""
    rng = np.random.default_rng(11)
    effects = {"imagenet": 0.06, "strong": 0.15, "same": 0.0, "scratch": 0.0}
    res = simulated_results(rng, effects, n_patients=100, n_seeds=3, seed_sd=0.02)
    assert res.arms[0].name == "imagenet"
    res.arms[0].provenance = {"description": "a zoo source", "license": "CC BY-NC", "restriction": "non-commercial"}
    res.arms[0].provenance["n_parameters"] = 5_727_768
    return res, summarize(res, n_resamples=400)


def test_every_arm_is_compared_with_scratch_and_imagenet_in_one_holm_family(four_arms):
    res, s = four_arms
    assert s.also_against == ["imagenet"]
    pairs = {(t.arm, t.against) for t in s.tests}
    assert pairs == {
        ("imagenet", "scratch"),
        ("strong", "scratch"),
        ("same", "scratch"),
        ("strong", "imagenet"),
        ("same", "imagenet"),
    }
    assert {t.family_size for t in s.tests} == {5} and s.family_size(1.0) == 5
    # the adjusted p-values are Holm's over the five raw p-values of paired_difference
    raw = [t.difference.p_value for t in s.tests]
    np.testing.assert_allclose([t.p_holm for t in s.tests], holm_adjust(raw))
    for t in s.tests:
        assert t.level == pytest.approx(0.99)
        assert (t.low, t.high, t.level) == pytest.approx(simultaneous_interval(t.difference, 5))
        assert (t.verdict in ("beat", "did worse than")) == (t.p_holm < 0.05)
    # the vs-ImageNet differences are paired on the same seeds and patients, as vs scratch
    strong = s.row("strong", 1.0)
    same_seeds = [r.predictions for r in res.runs if r.arm == "strong"]
    ref = [r.predictions for r in res.runs if r.arm == "imagenet"]
    assert strong.vs_also["imagenet"].difference == pytest.approx(
        paired_difference(same_seeds, ref, "auroc", n_resamples=400).difference
    )
    assert not s.row("scratch", 1.0).vs_also and not s.row("imagenet", 1.0).vs_also
    assert s.test("strong", "scratch", 1.0).verdict == "beat"
    beat = s.test("strong", "scratch", 1.0).sentence
    assert "Holm-adjusted p" in beat and "over 5 comparisons" in beat and "95% simultaneous CI" in beat
    assert strong.sentence == beat and "imagenet" in strong.also_sentences
    assert len(s.sentences()) == 5


def test_the_ranking_orders_by_mean_and_carries_verdicts_cost_and_origin(four_arms):
    res, s = four_arms
    assert s.ranking_fraction == 1.0
    means = [e.mean.mean for e in s.ranking]
    assert means == sorted(means, reverse=True) and [e.rank for e in s.ranking] == [1, 2, 3, 4]
    assert s.ranking[0].arm == "strong"
    top = s.ranking[0]
    assert top.verdicts["scratch"].startswith("beat (p ") and top.verdicts["imagenet"] != "n/a"
    scratch = next(e for e in s.ranking if e.arm == "scratch")
    assert scratch.verdicts["scratch"] == "(itself)" and scratch.verdicts["imagenet"] != "n/a"  # ImageNet's, mirrored
    imagenet = next(e for e in s.ranking if e.arm == "imagenet")
    assert imagenet.n_parameters == 5_727_768 and imagenet.seconds_per_epoch == pytest.approx(3.0)  # (5, 6, 7) s / 2
    header, rows = ranking_table(res, s)
    assert header[3:5] == ["vs scratch", "vs imagenet"] and all(len(r) == len(header) for r in rows)
    row = next(r for r in rows if r[1] == "imagenet")
    assert "5.7 M" in row and "a zoo source" in row and row[-1] == "CC BY-NC; RESTRICTED: non-commercial"
    header, rows = also_table(res, s, "imagenet")
    assert [r[0] for r in rows] == ["strong", "same"] and header[4] == "p (Holm-adjusted)"
    header, _ = summary_table(res, s)
    assert "simultaneous" in header[6] and header[7] == "p (Holm-adjusted)"


def test_two_arms_keep_the_single_tests_verdict():
    rng = np.random.default_rng(5)
    res = simulated_results(rng, {"imagenet": 0.1, "scratch": 0.0}, n_patients=80)
    s = summarize(res, n_resamples=300)
    (t,) = s.tests
    d = s.row("imagenet", 1.0).vs_reference
    assert t.family_size == 1 and t.p_holm == pytest.approx(d.p_value) and (t.low, t.high) == (d.low, d.high)
    assert t.sentence == _verdict("imagenet", "scratch", d, 1.0, 0.95)
    assert "Holm" not in t.sentence and "95% CI" in t.sentence
    header, _ = summary_table(res, s)
    assert header[6] == "95% CI (seeds and patients)" and header[7] == "p"


def test_also_against_follows_the_config():
    rng = np.random.default_rng(6)
    effects = {"imagenet": 0.05, "a": 0.1, "b": 0.0, "scratch": 0.0}
    none = summarize(simulated_results(rng, effects, compare={"also_against": []}), n_resamples=200)
    assert none.also_against == [] and {t.against for t in none.tests} == {"scratch"}
    assert none.family_size() == 3
    vs_a = summarize(simulated_results(rng, effects, compare={"also_against": ["a"]}), n_resamples=200)
    assert {(t.arm, t.against) for t in vs_a.tests if t.against == "a"} == {("imagenet", "a"), ("b", "a")}


def test_too_few_seeds_give_no_verdict_and_no_family():
    rng = np.random.default_rng(7)
    s = summarize(simulated_results(rng, {"imagenet": 0.2, "a": 0.2, "scratch": 0.0}, n_seeds=2), n_resamples=200)
    assert {t.verdict for t in s.tests} == {"no verdict"} and s.family_size() == 0
    assert all("no verdict" in x for x in s.sentences())


def test_the_report_shows_the_ranking_the_imagenet_table_and_the_holm_note(four_arms, tmp_path):
    res, s = four_arms
    write_report(res, tmp_path, summary=s, plots=False)
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Ranking", "## Against imagenet", "## Summary"):
        assert heading in md
    assert "Holm's step-down" in md and "Bonferroni's simultaneous 95% intervals (each at 99% with 5 tests)" in md
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Ranking</h2>" in html and "RESTRICTED: non-commercial" in html
