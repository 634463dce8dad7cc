"""What a comparison metric is: its task, its direction, its unit, its range and how it is written.

One record per metric, so the summary, the verdict, the report and the plots agree on whether lower is better
(HD95) and on the unit (mm) without each asking ``if metric == "hd95"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medtl.errors import ConfigError

__all__ = [
    "MetricSpec",
    "METRIC_SPECS",
    "CLASSIFICATION_METRICS",
    "SEGMENTATION_METRICS",
    "metric_spec",
    "metrics_for_task",
    "default_metric",
    "check_metric_for_task",
    "SCORE_TOLERANCE",
]

#: How close to the common validation plateau counts as "reached" for a score in [0, 1] (AUROC, Dice, ...).
SCORE_TOLERANCE = 0.02


@dataclass(frozen=True)
class MetricSpec:
    """A metric a comparison can report.

    Attributes:
        name: the metric's key (``auroc``, ``hd95``, ``dice_lung``).
        words: how sentences name it (``AUROC``, ``HD95``).
        task: ``classification`` or ``segmentation``.
        higher_is_better: False for distances (HD95).
        unit: ``mm`` for distances, else empty.
        bounds: the range of the metric (confidence intervals over seeds are clipped to it).
        digits: decimals the report prints.
        convergence_tolerance: how close to the common validation plateau counts as "reached", in the metric's
            units (below the plateau for higher-is-better metrics, above it for lower-is-better ones).
    """

    name: str
    words: str
    task: str
    higher_is_better: bool = True
    unit: str = ""
    bounds: tuple[float, float] = (0.0, 1.0)
    digits: int = 3
    convergence_tolerance: float = SCORE_TOLERANCE

    @property
    def label(self) -> str:
        """The name with its unit, for table headers and axes: ``HD95 (mm)``."""
        return f"{self.words} ({self.unit})" if self.unit else self.words

    def amount(self, value: float, *, sign: bool = False) -> str:
        """A value with its unit: ``4.10 mm``, ``+0.052``."""
        if value is None or not math.isfinite(value):
            return "n/a"
        text = f"{value:+.{self.digits}f}" if sign else f"{value:.{self.digits}f}"
        return f"{text} {self.unit}" if self.unit else text

    def better(self, difference: float) -> bool:
        """Whether a difference (a - b) is in the direction that favours a."""
        return difference > 0 if self.higher_is_better else difference < 0


_CLS = "classification"
_SEG = "segmentation"
_MM = dict(higher_is_better=False, unit="mm", bounds=(0.0, math.inf), digits=2, convergence_tolerance=1.0)

METRIC_SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("auroc", "AUROC", _CLS),
        MetricSpec("accuracy", "accuracy", _CLS),
        MetricSpec("balanced_accuracy", "balanced accuracy", _CLS),
        MetricSpec("f1", "F1", _CLS),
        MetricSpec("dice", "Dice", _SEG),
        MetricSpec("hd95", "HD95", _SEG, **_MM),
        MetricSpec("surface_dice", "surface Dice", _SEG),
    )
}

CLASSIFICATION_METRICS: tuple[str, ...] = tuple(n for n, s in METRIC_SPECS.items() if s.task == _CLS)
#: Segmentation metrics, each the mean over the foreground classes of a scan (``medtl.train.segmentation``).
SEGMENTATION_METRICS: tuple[str, ...] = tuple(n for n, s in METRIC_SPECS.items() if s.task == _SEG)


def metric_spec(name: str) -> MetricSpec:
    """The record of ``name``; a per-class segmentation metric (``hd95_nodule``) takes its metric's record.

    An unknown name gets a neutral record (higher is better, no unit), so a report never fails on a metric
    it only lists.
    """
    if name in METRIC_SPECS:
        return METRIC_SPECS[name]
    # longest prefix first: surface_dice_lung is surface Dice, not Dice
    for base in sorted(SEGMENTATION_METRICS, key=len, reverse=True):
        if name.startswith(base + "_"):
            spec = METRIC_SPECS[base]
            cls = name[len(base) + 1 :]
            return MetricSpec(
                name,
                f"{spec.words} {cls}",
                spec.task,
                spec.higher_is_better,
                spec.unit,
                spec.bounds,
                spec.digits,
                spec.convergence_tolerance,
            )
    return MetricSpec(name, name, "", bounds=(-math.inf, math.inf))


def metrics_for_task(task: str) -> tuple[str, ...]:
    """The primary metrics a comparison of ``task`` (classification or segmentation) may use."""
    return SEGMENTATION_METRICS if task == _SEG else CLASSIFICATION_METRICS


def default_metric(task: str) -> str:
    """``dice`` for segmentation, ``auroc`` for classification."""
    return "dice" if task == _SEG else "auroc"


def check_metric_for_task(metric: str, task: str, *, where: str = "compare.primary_metric") -> str:
    """``metric`` when a comparison of ``task`` can use it.

    Raises:
        ConfigError: a metric of the other task or an unknown one, naming the allowed ones.
    """
    allowed = metrics_for_task(task)
    if metric in allowed:
        return metric
    spec = METRIC_SPECS.get(metric)
    kind = f"a {spec.task} metric" if spec is not None else "not a metric medtl compares"
    raise ConfigError(
        f"{where} {metric!r} is {kind}; a {task} comparison uses {', '.join(allowed)}",
        fix=f"leave {where} out for {default_metric(task)}, or set one of those",
    )
