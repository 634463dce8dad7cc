"""Comparing arms (pretrained vs scratch): statistics, the compare driver, the report.

``compare(config)`` trains every (arm, seed, label fraction), then :mod:`medtl.evaluate.stats` gives
confidence intervals over seeds, paired differences over test patients (bootstrap, DeLong) and
convergence, and :mod:`medtl.evaluate.report` writes report.md, report.html, results.csv and results.json.
"""

from __future__ import annotations

from medtl.evaluate.compare import CompareConfig, CompareResult, compare, default_arms, load_compare_config
from medtl.evaluate.report import print_summary, write_report
from medtl.evaluate.results import ArmSpec, CompareResults, RunRecord
from medtl.evaluate.stats import delong_test, mean_ci, paired_difference
from medtl.evaluate.summary import Summary, summarize

__all__ = [
    "compare",
    "CompareConfig",
    "CompareResult",
    "load_compare_config",
    "default_arms",
    "CompareResults",
    "ArmSpec",
    "RunRecord",
    "Summary",
    "summarize",
    "write_report",
    "print_summary",
    "delong_test",
    "mean_ci",
    "paired_difference",
]
