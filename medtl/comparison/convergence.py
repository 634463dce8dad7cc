"""How fast an arm converges: epochs and seconds until a target both arms reach, "never" censored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Convergence", "convergence", "smooth_scores", "plateau", "censored_median"]


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
