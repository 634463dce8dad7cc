"""Comparing arms (pretrained vs scratch): statistics, the compare driver, the report.

``compare(config)`` trains every (arm, seed, label fraction), then :mod:`medtl.comparison.stats` gives
confidence intervals over seeds, paired differences over test patients (bootstrap, DeLong) and
convergence, and :mod:`medtl.comparison.report` writes report.md, report.html, results.csv and results.json.
Classification runs are compared on per-patient probabilities (AUROC, accuracy, ...); segmentation runs on
per-patient Dice, HD95 (mm, lower is better) or surface Dice (:mod:`medtl.comparison.patient_values`), with
each arm's example overlays in the report.
"""

from __future__ import annotations

from medtl.comparison.compare import CompareConfig, ComparisonReport, compare, default_arms, load_compare_config
from medtl.comparison.patient_values import PatientValues
from medtl.comparison.report import print_summary, write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import PatientPredictions, delong_test, mean_ci, paired_difference
from medtl.comparison.summary import Summary, summarize

__all__ = [
    "compare",
    "CompareConfig",
    "ComparisonReport",
    "load_compare_config",
    "default_arms",
    "CompareResults",
    "Arm",
    "RunRecord",
    "Summary",
    "summarize",
    "write_report",
    "print_summary",
    "delong_test",
    "mean_ci",
    "paired_difference",
    "PatientPredictions",
    "PatientValues",
]
