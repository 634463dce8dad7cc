"""Comparisons of many arms with a known truth, built without training: per-seed patient predictions of each arm.

Shared by tests/comparison/test_holm.py and tests/comparison/test_calibration_multi.py. As in
tests/comparison/test_calibration.py, a run's population AUROC is drawn around its arm's mean with a between-seed SD,
and per-patient scores are binormal with that AUROC and noise made of three parts: the patient (shared by every run
of every arm), the arm (shared by the seeds of one arm) and the run. Arms with equal means are exchangeable, so the
true difference between them is exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import aggregate_by_patient

#: the weights of a simulated arm, by name (the reference is scratch, "imagenet" the default also-against arm)
WEIGHTS = {"scratch": "scratch", "imagenet": "imagenet"}


def simulated_results(
    rng: np.random.Generator,
    effects: dict[str, float],
    *,
    n_patients: int = 60,
    n_seeds: int = 3,
    seed_sd: float = 0.056,
    mean_auroc: float = 0.8,
    shares: tuple[float, float, float] = (0.4, 0.3, 0.3),
    compare: dict | None = None,
) -> CompareResults:
    """A one-fraction comparison of the arms ``effects`` names (AUROC above ``mean_auroc``), scratch the reference.

    Args:
        rng: the random source.
        effects: arm name -> its true AUROC above the others' (0 for arms equal to scratch).
        n_patients: test patients (half positive).
        n_seeds: runs per arm.
        seed_sd: between-seed SD of a run's population AUROC.
        mean_auroc: the AUROC of an arm with effect 0.
        shares: variance shares of the patient, arm and run parts of the score noise.
        compare: the config's compare section (``also_against``...), as results.json records it.
    """
    n_pos = n_patients // 2
    y = np.r_[np.zeros(n_patients - n_pos, int), np.ones(n_pos, int)]
    pids = [f"p{i:03d}" for i in range(n_patients)]
    patient = rng.normal(size=n_patients)
    arms, runs = [], []
    for name, effect in effects.items():
        arms.append(Arm(name, "mobilenet_v2", weights=WEIGHTS.get(name, f"src-{name}")))
        arm_noise = rng.normal(size=n_patients)
        for s in range(n_seeds):
            auroc = float(np.clip(mean_auroc + effect + seed_sd * rng.normal(), 0.55, 0.99))
            separation = math.sqrt(2) * float(sps.norm.ppf(auroc))  # binormal, unit noise variance
            noise = (
                math.sqrt(shares[0]) * patient
                + math.sqrt(shares[1]) * arm_noise
                + math.sqrt(shares[2]) * rng.normal(size=n_patients)
            )
            units = aggregate_by_patient(pids, y, 1 / (1 + np.exp(-(separation * y + noise))))
            run = RunRecord(name, s, 1.0, "ok", predictions=units)
            run.test_metrics = {m: units.metric(m) for m in units.metric_names}
            run.curve = [{"epoch": 1.0, "time_s": 3.0}, {"epoch": 2.0, "time_s": 5.0 + s}]
            runs.append(run)
    return CompareResults(
        arms=arms,
        runs=runs,
        classes=["negative", "positive"],
        seeds=list(range(n_seeds)),
        fractions=[1.0],
        primary_metric="auroc",
        reference="scratch",
        config={"compare": compare} if compare is not None else {},
    )
