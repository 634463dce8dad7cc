"""Comparing arms (pretrained vs scratch): statistics, the compare driver, the report.

``medtl.compare(config)`` (:func:`medtl.comparison.compare.compare`; ``medtl.comparison.compare`` is its module)
trains every (arm, seed, label fraction), then :mod:`medtl.comparison.stats` gives confidence intervals over seeds,
paired differences over test patients (bootstrap, DeLong) and convergence, and :mod:`medtl.comparison.report` writes
report.md, report.html, results.csv and results.json. Classification runs are compared on per-patient probabilities
(AUROC, accuracy, ...); segmentation runs on per-patient Dice, HD95 (mm, lower is better) or surface Dice
(:mod:`medtl.comparison.patient_values`), with each arm's example overlays in the report.
"""

from __future__ import annotations

from medtl._lazy import lazy_package

# public name -> module that defines it (imported on first use: the config check of `medtl compare` and `medtl cv`
# reads medtl.comparison.compare_config without the training stack)
_EXPORTS: dict[str, str] = {
    "CompareConfig": "medtl.comparison.compare_config",
    "ComparisonReport": "medtl.comparison.compare",
    "load_compare_config": "medtl.comparison.compare_config",
    "default_arms": "medtl.comparison.compare_config",
    "CompareResults": "medtl.comparison.results",
    "Arm": "medtl.comparison.results",
    "RunRecord": "medtl.comparison.results",
    "Summary": "medtl.comparison.summary",
    "summarize": "medtl.comparison.summary",
    "write_report": "medtl.comparison.report",
    "print_summary": "medtl.comparison.report",
    "delong_test": "medtl.comparison.stats",
    "mean_ci": "medtl.comparison.stats",
    "paired_difference": "medtl.comparison.stats",
    "PatientPredictions": "medtl.comparison.stats",
    "PatientValues": "medtl.comparison.patient_values",
}

__all__, __getattr__, __dir__ = lazy_package(__name__, _EXPORTS)
