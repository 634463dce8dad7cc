"""DeLong's test of two correlated AUROCs (fast algorithm of Sun & Xu 2014), with "not estimable" for a zero SE."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

__all__ = ["DeLongResult", "delong_test"]


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
