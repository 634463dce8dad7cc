"""The metric registry: the one list of the metrics medtl computes, logs, monitors, compares and reports.

One record per metric says which tasks compute it, whether higher is better, its unit, its range, how it is
written and what Lightning logs it as (``val_<name>``). Configs (``train.monitor``, ``compare.primary_metric``),
the CLI's help, the training engine, ``compare``, the report and the plots read it; nothing else lists metric
names, and no code asks ``if metric == "hd95"``.

Derived names resolve to their base metric's record: a segmentation class (``dice_lung``, ``hd95_patient``), a
multi-label finding (``auroc_Effusion``). A regression metric's unit is the label's own (``mae`` in years when
``regression.unit`` says so): pass it as ``unit=``.

To add a metric: add a :class:`MetricSpec` to :data:`METRICS` and compute it in its tasks' ``metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from medtl.errors import ConfigError

__all__ = [
    "MetricSpec",
    "METRICS",
    "METRIC_SPECS",
    "SCORE_TOLERANCE",
    "LOSS",
    "metric_spec",
    "metrics_for_task",
    "default_metric",
    "check_metric_for_task",
    "monitors_for_task",
    "monitor_metric",
]

#: How close to the common validation plateau counts as "reached" for a score in [0, 1] (AUROC, Dice, ...).
SCORE_TOLERANCE = 0.02

_CLS, _ML, _REG, _SEG = "classification", "multilabel", "regression", "segmentation"
_ALL = (_CLS, _ML, _REG, _SEG)


@dataclass(frozen=True)
class MetricSpec:
    """A metric.

    Attributes:
        name: the metric's key (``auroc``, ``hd95``); derived keys (``dice_lung``) get their base's record.
        words: how sentences and tables name it (``AUROC``, ``HD95``).
        tasks: the tasks that compute it.
        higher_is_better: False for errors and distances (MAE, HD95, the loss).
        unit: ``mm`` for distances; a regression error takes the label's unit (see :func:`metric_spec`).
        bounds: the range of the metric (confidence intervals over seeds are clipped to it).
        digits: decimals the report prints.
        convergence_tolerance: how close to the common validation plateau counts as "reached", in the metric's
            units (below the plateau for higher-is-better metrics, above it for lower-is-better ones).
        relative_tolerance: used where ``convergence_tolerance`` is NaN: the tolerance as a share of the plateau
            (an error in the label's units, whose scale is not known in advance: 2% of the plateau's MAE).
        comparable: whether ``compare.primary_metric`` may be this metric (the loss may only be monitored).
        default_for: the tasks whose default primary metric and checkpoint monitor this is.
        scale_unit: the unit is the label's own (regression errors); :func:`metric_spec` fills it in.
        description: one line for help texts.
        chance: the value a model that learnt nothing gets in expectation (0.5 for AUROC), or None where the
            metric has no such level independent of the data (accuracy and F1 depend on the class balance, errors
            on the label's scale). The verdict says when the reference arm's interval holds it.
    """

    name: str
    words: str
    tasks: tuple[str, ...]
    higher_is_better: bool = True
    unit: str = ""
    bounds: tuple[float, float] = (0.0, 1.0)
    digits: int = 3
    convergence_tolerance: float = SCORE_TOLERANCE
    relative_tolerance: float = math.nan
    comparable: bool = True
    default_for: tuple[str, ...] = ()
    scale_unit: bool = False
    description: str = ""
    chance: float | None = None

    @property
    def monitor(self) -> str:
        """What Lightning logs and ``train.monitor`` names: ``val_<name>``."""
        return f"val_{self.name}"

    @property
    def mode(self) -> str:
        """``max`` or ``min``: the direction of improvement, as Lightning's callbacks take it."""
        return "max" if self.higher_is_better else "min"

    @property
    def label(self) -> str:
        """The name with its unit, for table headers and axes: ``HD95 (mm)``."""
        return f"{self.words} ({self.unit})" if self.unit else self.words

    def amount(self, value: float | None, *, sign: bool = False) -> str:
        """A value with its unit: ``4.10 mm``, ``+0.052``."""
        if value is None or not math.isfinite(value):
            return "n/a"
        text = f"{value:+.{self.digits}f}" if sign else f"{value:.{self.digits}f}"
        return f"{text} {self.unit}" if self.unit else text

    def tolerance_at(self, level: float) -> float:
        """The convergence tolerance at a plateau of ``level``: the absolute one, else the relative share of
        ``|level|``; NaN when the metric has neither (the loss)."""
        if math.isfinite(self.convergence_tolerance):
            return self.convergence_tolerance
        return self.relative_tolerance * abs(level)

    @property
    def tolerance_text(self) -> str:
        """The convergence tolerance in words: ``0.02``, ``1 mm``, ``2% of the plateau``, or ``n/a``."""
        if math.isfinite(self.convergence_tolerance):
            return f"{self.convergence_tolerance:g}" + (f" {self.unit}" if self.unit else "")
        if math.isfinite(self.relative_tolerance):
            return f"{self.relative_tolerance * 100:g}% of the plateau"
        return "n/a"

    def better(self, difference: float) -> bool:
        """Whether a difference (a - b) is in the direction that favours a."""
        return difference > 0 if self.higher_is_better else difference < 0


_MM = dict(higher_is_better=False, unit="mm", bounds=(0.0, math.inf), digits=2, convergence_tolerance=1.0)
# an error in the label's units: no absolute tolerance can be fixed in advance, so 2% of the plateau
_ERROR = dict(
    higher_is_better=False,
    bounds=(0.0, math.inf),
    digits=2,
    convergence_tolerance=math.nan,
    relative_tolerance=SCORE_TOLERANCE,
    scale_unit=True,
)

#: The metrics, in the order tables list them (each task's default first).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "auroc",
        "AUROC",
        (_CLS, _ML),
        default_for=(_CLS, _ML),
        description="area under the ROC curve (two classes; more classes and multi-label: macro over classes)",
        chance=0.5,
    ),
    MetricSpec("accuracy", "accuracy", (_CLS,), description="share of correct arg-max predictions"),
    MetricSpec("balanced_accuracy", "balanced accuracy", (_CLS,), description="mean recall over the classes"),
    MetricSpec("f1", "F1", (_CLS, _ML), description="F1 of the positive class (macro over classes and findings)"),
    MetricSpec(
        "ece",
        "ECE",
        (_CLS,),
        higher_is_better=False,
        description="expected calibration error, 15 equal-width bins (two classes: of the positive class's "
        "probability; more classes: of the top-label confidence)",
    ),
    MetricSpec(
        "brier",
        "Brier score",
        (_CLS,),
        higher_is_better=False,
        bounds=(0.0, 2.0),
        description="mean squared error of the probabilities (two classes: of the positive class's; more classes: "
        "summed over the one-hot vector)",
    ),
    MetricSpec(
        "average_precision",
        "average precision",
        (_ML,),
        description="area under the precision-recall curve, macro over the findings",
    ),
    MetricSpec(
        "auroc_micro", "micro AUROC", (_ML,), description="AUROC of every (scan, finding) pair pooled", chance=0.5
    ),
    MetricSpec(
        "average_precision_micro",
        "micro average precision",
        (_ML,),
        description="average precision of every (scan, finding) pair pooled",
    ),
    MetricSpec("mae", "MAE", (_REG,), default_for=(_REG,), description="mean absolute error", **_ERROR),
    MetricSpec("rmse", "RMSE", (_REG,), description="root mean squared error", **_ERROR),
    MetricSpec(
        "r2",
        "R²",
        (_REG,),
        bounds=(-math.inf, 1.0),
        convergence_tolerance=SCORE_TOLERANCE,
        description="coefficient of determination",
    ),
    MetricSpec(
        "pearson_r",
        "Pearson r",
        (_REG,),
        bounds=(-1.0, 1.0),
        description="Pearson correlation of predictions and labels",
    ),
    MetricSpec("dice", "Dice", (_SEG,), default_for=(_SEG,), description="Dice, mean over foreground classes"),
    MetricSpec("hd95", "HD95", (_SEG,), description="95th-percentile Hausdorff distance, mm", **_MM),
    MetricSpec("surface_dice", "surface Dice", (_SEG,), description="normalised surface Dice at a tolerance"),
    MetricSpec(
        "loss",
        "loss",
        _ALL,
        higher_is_better=False,
        bounds=(0.0, math.inf),
        comparable=False,
        convergence_tolerance=math.nan,
        description="the validation loss",
    ),
)

METRIC_SPECS: dict[str, MetricSpec] = {s.name: s for s in METRICS}
LOSS = METRIC_SPECS["loss"]


def metric_spec(name: str, *, unit: str | None = None) -> MetricSpec:
    """The record of ``name``.

    A derived name takes its base metric's record under its own name and words: ``hd95_nodule`` is HD95 of the
    class ``nodule``, ``auroc_Effusion`` AUROC of the finding ``Effusion`` (the longest registered prefix wins:
    ``surface_dice_lung`` is surface Dice). An unknown name gets a neutral record (higher is better, no unit), so
    a report never fails on a metric it only lists.

    Args:
        name: a metric key.
        unit: the label's unit, for metrics whose unit is the data's (regression errors: ``mae`` in ``years``).
    """
    spec = METRIC_SPECS.get(name)
    if spec is None:
        base = next((b for b in sorted(METRIC_SPECS, key=len, reverse=True) if name.startswith(b + "_")), None)
        if base is None:
            return MetricSpec(name, name, (), bounds=(-math.inf, math.inf), comparable=False)
        spec = METRIC_SPECS[base]
        spec = replace(spec, name=name, words=f"{spec.words} {name[len(base) + 1 :]}", default_for=())
    if spec.scale_unit and unit:
        spec = replace(spec, unit=unit)
    return spec


def metrics_for_task(task: str, *, comparable: bool = True) -> tuple[str, ...]:
    """The metrics ``task`` computes (``comparable``: only those a comparison may use as its primary metric)."""
    return tuple(s.name for s in METRICS if task in s.tasks and (s.comparable or not comparable))


def default_metric(task: str) -> str:
    """The default primary metric and checkpoint monitor of ``task`` (``auroc``, ``mae``, ``dice``...)."""
    return next(s.name for s in METRICS if task in s.default_for)


def monitors_for_task(task: str) -> tuple[str, ...]:
    """What ``train.monitor`` may name in a run of ``task``: ``val_<metric>`` for each of its metrics."""
    return tuple(METRIC_SPECS[m].monitor for m in metrics_for_task(task, comparable=False))


def monitor_metric(monitor: str) -> MetricSpec:
    """The record of a monitor (``val_hd95`` -> HD95)."""
    return metric_spec(monitor.removeprefix("val_"))


def check_metric_for_task(metric: str, task: str, *, where: str = "compare.primary_metric") -> str:
    """``metric`` when a comparison of ``task`` can use it.

    Raises:
        ConfigError: a metric of another task or an unknown one, naming the allowed ones.
    """
    allowed = metrics_for_task(task)
    if metric in allowed:
        return metric
    spec = METRIC_SPECS.get(metric)
    if spec is None:
        kind = "not a metric medtl compares"
    elif not spec.comparable:
        kind = "not a metric a comparison can rank arms by"
    else:
        kind = f"a {' and '.join(spec.tasks)} metric"
    raise ConfigError(
        f"{where} {metric!r} is {kind}; a {task} comparison uses {', '.join(allowed)}",
        fix=f"leave {where} out for {default_metric(task)}, or set one of those",
    )
