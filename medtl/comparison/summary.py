"""The summary of a comparison: per arm and label fraction, the metrics over seeds, the paired difference
against the reference arm (and against the ``compare.also_against`` arms, ImageNet by default), the verdict
sentences with Holm's adjustment over each label fraction's tests, the ranking of the arms, and convergence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import (
    MIN_SEEDS_FOR_VERDICT,
    MeanCI,
    PairedDifference,
    censored_median,
    convergence,
    holm_adjust,
    mean_ci,
    paired_difference,
    plateau,
    seeds_needed,
    simultaneous_interval,
    smooth_scores,
)
from medtl.metric_specs import METRIC_SPECS, SCORE_TOLERANCE, MetricSpec, metric_spec

__all__ = [
    "ArmFractionSummary",
    "Summary",
    "summarize",
    "fraction_words",
    "used_words",
    "METRIC_WORDS",
    "CONVERGENCE_TOLERANCE",
    "CONVERGENCE_WINDOW",
    "chance_note",
    "schedule_warnings",
    "secondary_metrics",
    "PairTest",
    "RankedArm",
    "also_against_arms",
]

#: How close (in units of the primary metric) to the common validation plateau counts as "reached"; a metric in mm
#: (HD95) has its own (:attr:`~medtl.metric_specs.MetricSpec.convergence_tolerance`, 1 mm), an error in the label's
#: units a share of the plateau (:attr:`~medtl.metric_specs.MetricSpec.relative_tolerance`, MAE: 2%).
CONVERGENCE_TOLERANCE = SCORE_TOLERANCE
#: Validation scores are smoothed by a trailing mean over this many epochs before looking for the crossing.
CONVERGENCE_WINDOW = 3


def fraction_words(fraction: float) -> str:
    """'with 10% of the labels' / 'with all the labels'."""
    if fraction >= 1.0 - 1e-9:
        return "with all the labels"
    pct = fraction * 100
    return f"with {pct:.0f}% of the labels" if abs(pct - round(pct)) < 1e-6 else f"with {pct:.1f}% of the labels"


# ------------------------------------------------------------------------------------------ summary


@dataclass
class ArmFractionSummary:
    """Statistics of one arm at one label fraction.

    Attributes:
        arm: arm name.
        fraction: label fraction asked for.
        n_ok: runs that finished; ``n_failed`` runs that failed.
        metrics: test metric name -> mean and 95% CI over seeds.
        best_val: mean/CI over seeds of the best validation primary metric.
        seconds: mean wall-clock seconds per run.
        vs_reference: paired difference to the reference arm (None for the reference itself).
        secondary: the paired difference to the reference arm in each of ``compare.secondary_metrics``, computed as
            :attr:`vs_reference` is (no verdict is drawn from them).
        convergence: per seed, the epoch and seconds at which this arm and the reference reached the
            worse of their two validation plateaus less the tolerance, and their censored medians (see
            :func:`_convergence`).
        sentence: the verdict in words.
        fraction_used: mean over the runs of the share of training patients actually used (``None``
            when the runs did not record it).
        left_out: segmentation: metric -> per run (seed order), the test patients left out of it because it
            was undefined on all their scans (HD95 when a class is in only one of prediction and reference);
            only metrics with a patient left out appear.
        vs_also: the paired difference to each arm of ``compare.also_against`` (ImageNet by default), by its name.
        also_sentences: the verdict against each of them, by its name.
        seconds_per_epoch: mean over the runs of their seconds per epoch (metrics.csv: the last ``time_s`` over the
            last epoch, validation included).
    """

    arm: str
    fraction: float
    n_ok: int
    n_failed: int
    metrics: dict[str, MeanCI]
    best_val: MeanCI
    seconds: float | None
    vs_reference: PairedDifference | None = None
    secondary: dict[str, PairedDifference] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    fraction_used: float | None = None
    left_out: dict[str, list[int]] = field(default_factory=dict)
    vs_also: dict[str, PairedDifference] = field(default_factory=dict)
    also_sentences: dict[str, str] = field(default_factory=dict)
    seconds_per_epoch: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "fraction": self.fraction,
            "fraction_used": self.fraction_used,
            "n_ok": self.n_ok,
            "n_failed": self.n_failed,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "best_val": self.best_val.to_dict(),
            "seconds": self.seconds,
            "vs_reference": self.vs_reference.to_dict() if self.vs_reference else None,
            "secondary": {k: v.to_dict() for k, v in self.secondary.items()},
            "convergence": self.convergence,
            "sentence": self.sentence,
            "left_out": self.left_out,
            "vs_also": {k: v.to_dict() for k, v in self.vs_also.items()},
            "also_sentences": self.also_sentences,
            "seconds_per_epoch": self.seconds_per_epoch,
        }


@dataclass
class Summary:
    """All statistics of a comparison, one :class:`ArmFractionSummary` per arm and fraction."""

    primary_metric: str
    reference: str
    rows: list[ArmFractionSummary]
    confidence: float = 0.95
    n_resamples: int = 2000
    warnings: list[str] = field(default_factory=list)
    min_seeds: int = MIN_SEEDS_FOR_VERDICT
    convergence_tolerance: float = CONVERGENCE_TOLERANCE
    convergence_window: int = CONVERGENCE_WINDOW
    task: str = "classification"
    unit: str = ""
    #: what an arm's runs repeat over, the noun of the sentences: ``seed``, ``fold`` or ``seed x fold``
    repetition: str = "seed"
    #: the arms every other arm is also compared with, besides the reference (``compare.also_against``)
    also_against: list[str] = field(default_factory=list)
    #: every paired test reported, each label fraction's judged as one family (Holm)
    tests: list[PairTest] = field(default_factory=list)
    #: the arms by mean primary metric at :attr:`ranking_fraction` (the largest label fraction with results)
    ranking: list[RankedArm] = field(default_factory=list)
    ranking_fraction: float | None = None

    @property
    def spec(self) -> MetricSpec:
        """The primary metric's record: direction, unit, digits."""
        return self.metric_spec(self.primary_metric)

    def metric_spec(self, name: str) -> MetricSpec:
        """The record of a metric of this comparison, with :attr:`unit` where its unit is the label's (a
        regression's MAE in years: :meth:`medtl.tasks.base.Task.metric_unit`)."""
        return metric_spec(name, unit=self.unit or None)

    @property
    def tolerance_text(self) -> str:
        """The convergence tolerance in words: ``0.02``, ``1 mm``, ``2% of the plateau``."""
        return replace(self.spec, convergence_tolerance=self.convergence_tolerance).tolerance_text

    def row(self, arm: str, fraction: float) -> ArmFractionSummary | None:
        for r in self.rows:
            if r.arm == arm and abs(r.fraction - fraction) < 1e-9:
                return r
        return None

    def test(self, arm: str, against: str, fraction: float) -> PairTest | None:
        """The paired test of ``arm`` against ``against`` at ``fraction``, if it was made."""
        for t in self.tests:
            if t.arm == arm and t.against == against and abs(t.fraction - fraction) < 1e-9:
                return t
        return None

    def family_size(self, fraction: float | None = None) -> int:
        """Tests in the family of ``fraction`` (Holm's ``m``); the largest family when ``fraction`` is ``None``."""
        sizes = [t.family_size for t in self.tests if fraction is None or abs(t.fraction - fraction) < 1e-9]
        return max(sizes, default=0)

    def sentences(self) -> list[str]:
        """Every verdict sentence: per arm and fraction, against the reference, then against each ``also_against``
        arm."""
        return [s for r in self.rows for s in (r.sentence, *r.also_sentences.values()) if s]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "primary_metric": self.primary_metric,
            "higher_is_better": self.spec.higher_is_better,
            "unit": self.spec.unit,
            "reference": self.reference,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "min_seeds": self.min_seeds,
            "convergence_tolerance": self.convergence_tolerance,
            "convergence_relative_tolerance": self.spec.relative_tolerance,
            "convergence_window": self.convergence_window,
            "warnings": self.warnings,
            "rows": [r.to_dict() for r in self.rows],
            "also_against": self.also_against,
            "adjustment": "holm",
            "tests": [t.to_dict() for t in self.tests],
            "ranking_fraction": self.ranking_fraction,
            "ranking": [r.to_dict() for r in self.ranking],
        }


METRIC_WORDS = {name: spec.words for name, spec in METRIC_SPECS.items()}


def used_words(fraction: float, fraction_used: float | None) -> str:
    """' (16.7% actually used)' when the share of patients used differs from the fraction asked for, else ''."""
    if fraction_used is None or not np.isfinite(fraction_used) or abs(fraction_used - fraction) < 0.005:
        return ""
    return f" ({fraction_used * 100:.1f}% actually used)"


def repetition_noun(results: CompareResults) -> str:
    """What the runs of one arm repeat over: ``seed`` (seeds on one split), ``fold`` (cross-validation folds) or
    ``seed x fold`` (both; ``compare.repeat``)."""
    if not getattr(results, "folds", None):
        return "seed"
    return "fold" if len(results.seeds) == 1 else "seed x fold"


def repetitions(k: int, noun: str) -> str:
    """``3 seeds``, ``1 fold``, ``6 runs (seeds x folds)``."""
    if noun == "seed x fold":
        return f"{k} run{'s' if k != 1 else ''} (seeds x folds)"
    return f"{k} {noun}{'s' if k != 1 else ''}"


def not_estimable_reason(d: PairedDifference, noun: str = "seed") -> str:
    """Why a difference with enough repetitions has no interval: a zero standard error, or no defined resample."""
    if d.se == 0:
        every = "run" if noun == "seed x fold" else noun
        return (
            f"every {every} and every resample of test patients gave the same difference (identical arms, or "
            "constant outputs)"
        )
    return "no resample of the test patients gave a defined value of the metric for both arms"


def _too_few_seeds(d: PairedDifference, unit: str = "", noun: str = "seed") -> str:
    """What to do when there are too few seeds for a verdict, with a seed count where one can be estimated."""
    k = d.n_seeds
    spec = metric_spec(d.metric, unit=unit or None)
    if noun != "seed":  # folds: the count is splits.folds (x compare.seeds)
        return (
            f"Run more: at least {MIN_SEEDS_FOR_VERDICT} folds (or seeds x folds) per arm are needed for any verdict "
            "(splits.folds, compare.seeds)."
        )
    base = f"at least {MIN_SEEDS_FOR_VERDICT} seeds per arm are needed for any verdict (compare.seeds)"
    # seeds that agree exactly (seed SD 0, a few test patients) measure no training noise to extrapolate from
    if k < 2 or not np.isfinite(d.seed_sd) or d.seed_sd == 0:
        return f"Run more: {base}; 5 seeds give an interval about half as wide as 3 when training noise dominates."
    need = seeds_needed(d.difference, d.seed_sd, d.shared_patient_se, d.n_patients, confidence=d.confidence)
    if need is None:
        return (
            f"Run more: {base}. With the seed SD seen here ({spec.amount(d.seed_sd)}) and these test patients "
            f"(patient SE {spec.amount(d.patient_se)}), even 50 seeds would not resolve a difference this small."
        )
    return (
        f"Run more: {base}; with the seed SD seen here ({spec.amount(d.seed_sd)}), a difference of this size would "
        f"need about {need} seeds per arm to be resolved."
    )


def _verdict(
    arm: str,
    ref: str,
    d: PairedDifference | None,
    fraction: float,
    confidence: float,
    fraction_used: float | None = None,
    unit: str = "",
    noun: str = "seed",
) -> str:
    """The verdict sentence; its direction follows the metric's ("beat" is a lower HD95, a higher Dice), its
    amounts carry the metric's unit (``unit``: the label's, for errors in the label's units)."""
    words = fraction_words(fraction) + used_words(fraction, fraction_used)
    if d is None or not np.isfinite(d.difference):
        return f"{arm} could not be compared with {ref} {words} (no paired test predictions)."
    spec = metric_spec(d.metric, unit=unit or None)
    m = spec.words
    diff = f"{spec.amount(d.difference, sign=True)} {m}" + ("" if spec.higher_is_better else " (lower is better)")
    k = d.n_seeds
    if k < MIN_SEEDS_FOR_VERDICT:
        seeds = repetitions(k, noun)
        return (
            f"{arm} differed from {ref} by {diff} {words}, but with {seeds} per arm training noise cannot be "
            f"separated from an effect: no verdict. {_too_few_seeds(d, unit, noun)}"
        )
    if not d.estimable:
        return (
            f"{arm} differed from {ref} by {diff} {words}, but its uncertainty is not estimable: "
            f"{not_estimable_reason(d, noun)}. No verdict."
        )
    pct = f"{confidence * 100:.0f}%"
    tail = f"{repetitions(k, noun)}, {d.n_patients} test patients"
    if d.low > 0 or d.high < 0:
        verb = "beat" if spec.better(d.difference) else "did worse than"
        if spec.higher_is_better:
            ci = f"({pct} CI {spec.amount(d.low)} to {spec.amount(d.high)}; {tail})"
            return f"{arm} {verb} {ref} by {spec.amount(abs(d.difference))} {m} {ci} {words}."
        # lower is better: say which way and by how much, with the interval of that same amount
        way = "lower" if d.difference < 0 else "higher"
        lo, hi = sorted((abs(d.low), abs(d.high)))
        ci = f"({pct} CI {spec.amount(lo)} to {spec.amount(hi)} {way}; {tail})"
        return f"{arm} {verb} {ref}: {m} {spec.amount(abs(d.difference))} {way} {ci} {words}."
    ci = f"({pct} CI {spec.amount(d.low)} to {spec.amount(d.high)}; {tail})"
    return f"{arm} did not beat {ref} {words}: the difference was {diff} {ci}, no significant difference."


def _curve(run: RunRecord, metric: str) -> tuple[list[int], list[float], list[float]]:
    return (
        [int(x["epoch"]) for x in run.curve],
        [float(x.get("time_s", math.nan)) for x in run.curve],
        [float(x.get(f"val_{metric}", math.nan)) for x in run.curve],
    )


def _last(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(max(finite)) if finite else math.nan


def _convergence(pairs: list[tuple[RunRecord, RunRecord]], metric: str) -> dict[str, Any]:
    """Epochs and seconds for an arm and the reference to reach a validation level both of them reach.

    Per seed, each run's validation curve is smoothed (trailing mean over :data:`CONVERGENCE_WINDOW`
    epochs) and its plateau is the mean of the last third of the smoothed curve; the target is the
    worse of the two plateaus less the metric's tolerance (:data:`CONVERGENCE_TOLERANCE` for scores in
    [0, 1]): for a lower-is-better metric (HD95) the higher plateau plus 1 mm, reached when the curve
    crosses it from above. A metric in the label's units (MAE) has no tolerance fixed in advance: its
    tolerance is a share of the worse plateau (:meth:`~medtl.metric_specs.MetricSpec.tolerance_at`; 2%), the
    same for both runs of the pair. Both runs are measured against the
    same target in the same way, so two identical arms get the same answer in distribution (comparing
    one arm's first crossing with the other's best epoch, a selection-biased maximum, showed "never" for
    half the seeds of identical arms). A run that does not reach the target (its curve stops or has no
    scores) is censored at its last epoch and kept in the Kaplan-Meier median, not dropped.
    """
    spec = metric_spec(metric)
    up = spec.higher_is_better
    per_seed: dict[str, dict[str, Any]] = {}
    for run, ref in pairs:
        if not run.curve or not ref.curve:
            continue
        e, t, s = _curve(run, metric)
        ref_e, ref_t, ref_s = _curve(ref, metric)
        smooth, ref_smooth = smooth_scores(s, CONVERGENCE_WINDOW), smooth_scores(ref_s, CONVERGENCE_WINDOW)
        level, ref_level = plateau(smooth), plateau(ref_smooth)
        worse = min(level, ref_level) if up else max(level, ref_level)
        tol = spec.tolerance_at(worse)
        target = worse - tol if up else worse + tol
        if not np.isfinite(target):
            continue
        c = convergence(e, t, smooth, target, higher_is_better=up)
        cr = convergence(ref_e, ref_t, ref_smooth, target, higher_is_better=up)
        per_seed[str(run.seed) if run.fold is None else f"{run.seed}-fold{run.fold}"] = c.to_dict() | {
            "plateau": level,
            "reference_plateau": ref_level,
            "tolerance": tol,
            "last_epoch": max(e),
            "last_seconds": _last(t),
            "reference_epoch": cr.epoch,
            "reference_seconds": cr.seconds,
            "reference_reached": cr.reached,
            "reference_last_epoch": max(ref_e),
            "reference_last_seconds": _last(ref_t),
        }
    if not per_seed:
        return {}
    v = list(per_seed.values())

    def median(key: str, limit: str) -> float | None:
        limits = [c[limit] for c in v]
        if not all(np.isfinite(x) for x in limits):
            return None
        return censored_median([c[key] for c in v], limits)

    return {
        "per_seed": per_seed,
        "n": len(v),
        "n_reached": sum(c["reached"] for c in v),
        "n_reference_reached": sum(c["reference_reached"] for c in v),
        "median_epoch": median("epoch", "last_epoch"),
        "median_seconds": median("seconds", "last_seconds"),
        "reference_median_epoch": median("reference_epoch", "reference_last_epoch"),
        "reference_median_seconds": median("reference_seconds", "reference_last_seconds"),
        "tolerance": spec.convergence_tolerance,
        "relative_tolerance": spec.relative_tolerance,
        "higher_is_better": up,
        "window": CONVERGENCE_WINDOW,
    }


def summarize(results: CompareResults, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """Per arm and fraction: mean/CI over seeds, the paired difference to the reference arm, convergence.

    The paired difference pairs each arm's run with the reference's run of the same seed (and fold, with
    ``compare.repeat: folds`` or ``both``; the intervals then carry Nadeau and Bengio's correction for overlapping
    training sets: see :func:`~medtl.comparison.stats.paired_difference` for its interval over seeds and patients);
    convergence is described in :func:`_convergence`.
    """
    metric = results.primary_metric
    ref = results.reference
    best_bounds = metric_spec(metric).bounds
    # the unit of errors in the label's units (a regression's MAE in years), from the experiment's config
    unit = results.task_class.metric_unit(results.config)
    # what the runs of one arm repeat over: seeds on one split, cross-validation folds, or both (compare.repeat)
    noun = repetition_noun(results)
    rows: list[ArmFractionSummary] = []
    for arm in results.arms:
        for fraction in results.fractions:
            runs = [r for r in results.runs if r.arm == arm.name and abs(r.fraction - fraction) < 1e-9]
            ok = sorted((r for r in runs if r.ok), key=lambda r: r.repetition)
            metric_names = sorted({k for r in ok for k in r.test_metrics}, key=lambda k: (k != metric, k))
            metrics = {
                k: mean_ci(
                    [r.test_metrics.get(k, math.nan) for r in ok],
                    confidence,
                    bounds=metric_spec(k).bounds,
                    fold_ratio=results.fold_ratio,
                )
                for k in metric_names
            }
            secs = [r.seconds for r in ok if r.seconds is not None]
            used = [r.fraction_used for r in ok if r.fraction_used is not None and np.isfinite(r.fraction_used)]
            row = ArmFractionSummary(
                arm=arm.name,
                fraction=fraction,
                n_ok=len(ok),
                n_failed=sum(r.status == "failed" for r in runs),
                metrics=metrics,
                best_val=mean_ci(
                    [r.best_val(metric) for r in ok], confidence, bounds=best_bounds, fold_ratio=results.fold_ratio
                ),
                seconds=float(np.mean(secs)) if secs else None,
                fraction_used=float(np.mean(used)) if used else None,
                left_out={k: [r.n_left_out(k) for r in ok] for k in metric_names if any(r.n_left_out(k) for r in ok)},
            )
            ref_runs = {
                r.repetition: r for r in results.runs if r.arm == ref and abs(r.fraction - fraction) < 1e-9 and r.ok
            }
            if arm.name != ref and ref_runs:
                pairs = [(r, ref_runs[r.repetition]) for r in ok if r.repetition in ref_runs]
                with_preds = [(a, b) for a, b in pairs if a.predictions is not None and b.predictions is not None]
                if with_preds:
                    row.vs_reference = paired_difference(
                        [a.predictions for a, _ in with_preds],
                        [b.predictions for _, b in with_preds],
                        metric,
                        n_resamples=n_resamples,
                        confidence=confidence,
                        seed=seed,
                        fold_ratio=results.fold_ratio,
                    )
                row.convergence = _convergence(pairs, metric)
                ref_values = [r.test_metrics.get(metric, math.nan) for r in ref_runs.values()]
                ref_ci = mean_ci(ref_values, confidence, bounds=best_bounds, fold_ratio=results.fold_ratio)
                row.sentence = _verdict(
                    results.arm(arm.name).display,
                    results.arm(ref).display + chance_note(metric_spec(metric), ref_ci, confidence),
                    row.vs_reference,
                    fraction,
                    confidence,
                    row.fraction_used,
                    unit,
                    noun,
                )
            rows.append(row)
    _secondary_differences(results, rows, n_resamples=n_resamples, confidence=confidence, seed=seed)
    spec = metric_spec(metric)
    summary = Summary(
        metric,
        ref,
        rows,
        confidence,
        n_resamples,
        _warnings(results),
        convergence_tolerance=spec.convergence_tolerance,
        task=results.task,
        unit=unit,
        repetition=noun,
    )
    _many_arms(results, summary, n_resamples=n_resamples, seed=seed)
    return summary


def secondary_metrics(results: CompareResults) -> list[str]:
    """The comparison's ``compare.secondary_metrics`` (from its config), the primary metric left out."""
    names = ((results.config or {}).get("compare") or {}).get("secondary_metrics") or []
    return [str(m) for m in names if m != results.primary_metric]


def _secondary_differences(
    results: CompareResults, rows: list[ArmFractionSummary], *, n_resamples: int, confidence: float, seed: int
) -> None:
    """Fill each row's :attr:`ArmFractionSummary.secondary`: the paired difference to the reference arm in each
    secondary metric, the runs paired as for the primary metric (same seed, and fold), with the same bootstrap."""
    names = secondary_metrics(results)
    if not names:
        return
    ref = results.reference
    fold_ratio = float(getattr(results, "fold_ratio", 0.0) or 0.0)
    extra: dict[str, Any] = {"fold_ratio": fold_ratio} if fold_ratio else {}

    def key(r: RunRecord) -> Any:
        return getattr(r, "repetition", r.seed)

    for row in rows:
        if row.arm == ref:
            continue
        mine = [r for r in results.runs if r.arm == row.arm and abs(r.fraction - row.fraction) < 1e-9 and r.ok]
        theirs = {key(r): r for r in results.runs if r.arm == ref and abs(r.fraction - row.fraction) < 1e-9 and r.ok}
        pairs = sorted(
            ((a, theirs[key(a)]) for a in mine if key(a) in theirs and a.predictions is not None),
            key=lambda p: str(key(p[0])),
        )
        pairs = [(a, b) for a, b in pairs if b.predictions is not None]
        for name in names:
            if not pairs or name not in pairs[0][0].predictions.metric_names:
                continue
            row.secondary[name] = paired_difference(
                [a.predictions for a, _ in pairs],
                [b.predictions for _, b in pairs],
                name,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
                **extra,
            )


def _warnings(results: CompareResults) -> list[str]:
    """Problems a reader must know before trusting a verdict."""
    out = []
    for arm in results.arms:
        runs = [r for r in results.runs if r.arm == arm.name and r.ok and r.predictions is not None]
        if runs:
            out.extend(results.task_class.run_warnings(results, arm, runs))
        failed = [r for r in results.runs if r.arm == arm.name and r.status == "failed"]
        if failed:
            out.append(f"{arm.display}: {len(failed)} run(s) failed; see 'Failed runs'.")
    return schedule_warnings(results.arms, results.config.get("train") or {}, results.reference) + out


def schedule_warnings(arms: list[Arm], train: dict[str, Any], reference: str) -> list[str]:
    """One warning per arm whose schedule keeps its pretrained body frozen for every epoch
    (:func:`medtl.train.schedule.frozen_body_warning`): a linear probe set against the reference's full training.

    Args:
        arms: the comparison's arms (their resolved schedules).
        train: the experiment's ``train`` section as a dict (``epochs``, ``freeze_epochs``).
        reference: the reference arm's name.
    """
    from medtl.train.schedule import frozen_body_warning

    epochs, freeze = train.get("epochs"), train.get("freeze_epochs", 1)
    if not isinstance(epochs, int) or not isinstance(freeze, int):
        return []
    ref = next((a.display for a in arms if a.name == reference), reference)
    out = []
    for arm in arms:
        text = frozen_body_warning(arm.schedule, epochs=epochs, freeze_epochs=freeze)
        if text and arm.name != reference:
            out.append(f"{arm.display}: {text}. Its verdict compares a linear probe with {ref} trained in full.")
        elif text:
            out.append(f"{arm.display} (the reference): {text}.")
    return out


def chance_note(spec: MetricSpec, ci: MeanCI, confidence: float = 0.95) -> str:
    """`` (at chance: AUROC 0.519, 95% CI 0.470 to 0.568 over seeds holds 0.5)`` when the metric has a chance level
    (:attr:`~medtl.metric_specs.MetricSpec.chance`) and the interval over seeds holds it, else ``""`` (also with a
    single seed, which gives no interval)."""
    level = spec.chance
    if level is None or not (np.isfinite(ci.low) and np.isfinite(ci.high)) or not ci.low <= level <= ci.high:
        return ""
    pct = f"{confidence * 100:.0f}%"
    return (
        f" (at chance: {spec.words} {spec.amount(ci.mean)}, {pct} CI {spec.amount(ci.low)} to "
        f"{spec.amount(ci.high)} over seeds holds {level:g})"
    )


# ------------------------------------------------------------------ many arms: one family of tests per fraction


@dataclass
class PairTest:
    """One paired test of a comparison, judged with the other tests at its label fraction as one family.

    Each label fraction asks "which start is best with this many labels?": every arm against the reference and
    against each ``compare.also_against`` arm is one test of that fraction's family. A verdict needs Holm's
    adjusted p-value (:func:`~medtl.comparison.stats.holm_adjust`) below ``1 - confidence``, which keeps the chance
    of any false "beat" or "did worse" at that fraction at or under 5%; the interval shown is Bonferroni's
    simultaneous interval (:func:`~medtl.comparison.stats.simultaneous_interval`). With one test in the family both
    are the test's own p-value and 95% interval.

    Attributes:
        arm: the arm tested.
        against: the arm it is compared with.
        fraction: the label fraction.
        difference: the paired difference ``arm - against`` (its own unadjusted p-value and interval).
        family_size: tests in the family of this fraction (Holm's ``m``: those that allow a verdict, with at least 3
            seeds and an estimable interval); 0 when this test is not one of them.
        p_holm: Holm-adjusted p-value (``nan`` outside the family).
        low: lower bound of the interval shown; ``high`` likewise.
        level: the confidence of each interval, ``1 - (1 - confidence) / family_size``.
        verdict: ``"beat"``, ``"did worse than"``, ``"no significant difference"`` or ``"no verdict"``.
        sentence: the verdict in words.
    """

    arm: str
    against: str
    fraction: float
    difference: PairedDifference
    family_size: int
    p_holm: float
    low: float
    high: float
    level: float
    verdict: str
    sentence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "against": self.against,
            "fraction": self.fraction,
            "difference": self.difference.difference,
            "p_value": self.difference.p_value,
            "family_size": self.family_size,
            "p_holm": self.p_holm,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "verdict": self.verdict,
            "sentence": self.sentence,
        }


@dataclass
class RankedArm:
    """One arm in the ranking: its place by mean primary metric at the ranking's label fraction, and its verdicts.

    Attributes:
        rank: 1 for the best mean; ``None`` for an arm without a finished run there.
        arm: the arm's name.
        mean: its primary metric over seeds (mean and 95% CI), or ``None``.
        verdicts: against each reference arm (by name): the verdict with its Holm-adjusted p, ``"(itself)"`` for the
            arm compared with, ``"n/a"`` when no test was made.
        seconds_per_epoch: mean seconds per epoch of its runs there.
        n_parameters: parameters of its network (from its runs' result.json), when known.
    """

    rank: int | None
    arm: str
    mean: MeanCI | None
    verdicts: dict[str, str]
    seconds_per_epoch: float | None
    n_parameters: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "arm": self.arm,
            "mean": self.mean.to_dict() if self.mean is not None else None,
            "verdicts": self.verdicts,
            "seconds_per_epoch": self.seconds_per_epoch,
            "n_parameters": self.n_parameters,
        }


#: the weights of the arms a comparison also compares every arm with when ``compare.also_against`` is not set
ALSO_AGAINST_WEIGHTS = ("imagenet", "imagenet-inflated")


def also_against_arms(results: CompareResults) -> list[str]:
    """The arms every other arm is also compared with: ``compare.also_against`` when the config sets it (those among
    the arms, the reference left out), else the ImageNet arms (weights ``imagenet`` or ``imagenet-inflated``) other
    than the reference."""
    names = [a.name for a in results.arms]
    given = (results.config.get("compare") or {}).get("also_against")
    if given is not None:
        return [n for n in given if n in names and n != results.reference]
    return [a.name for a in results.arms if a.weights in ALSO_AGAINST_WEIGHTS and a.name != results.reference]


def _pair_key(run: RunRecord) -> tuple[int, int]:
    """What pairs a run with another arm's run: its seed, and its cross-validation fold when it has one."""
    fold = getattr(run, "fold", None)
    return run.seed, -1 if fold is None else int(fold)


def _repeat_kwargs(results: CompareResults) -> dict[str, Any]:
    """Cross-validation folds as repetitions (``compare.repeat``): the fold ratio of the paired differences; nothing
    for seeds on one split."""
    folds = getattr(results, "folds", None)
    if not folds:
        return {}
    return {"fold_ratio": results.fold_ratio}


def _seconds_per_epoch(runs: list[RunRecord]) -> float | None:
    """Mean over runs of (wall-clock seconds at the last epoch) / (epochs), from metrics.csv."""
    per = []
    for r in runs:
        rows = [x for x in r.curve if np.isfinite(float(x.get("time_s", math.nan))) and float(x.get("epoch", 0)) > 0]
        if rows:
            per.append(float(rows[-1]["time_s"]) / float(rows[-1]["epoch"]))
    return float(np.mean(per)) if per else None


def _p_text(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _family_sentence(
    arm: str, against: str, t: PairTest, fraction_used: float | None, confidence: float, unit: str, reps: str
) -> str:
    """The verdict of a test judged in a family of two or more: Holm's decision, Bonferroni's interval."""
    d = t.difference
    spec = metric_spec(d.metric, unit=unit or None)
    m = spec.words
    words = fraction_words(t.fraction) + used_words(t.fraction, fraction_used)
    pct = f"{confidence * 100:.0f}%"
    holm = f"Holm-adjusted p {_p_text(t.p_holm)} over {t.family_size} comparisons; {reps}, {d.n_patients} test patients"
    holds = t.low <= 0 <= t.high
    signed = f"{pct} simultaneous CI {spec.amount(t.low)} to {spec.amount(t.high)}"
    if t.verdict in ("beat", "did worse than"):
        note = ", Bonferroni's, which still holds 0 where Holm's step-down rejects" if holds else ""
        if spec.higher_is_better or holds:
            ci = f"({signed}{note}; {holm})"
            if spec.higher_is_better:
                return f"{arm} {t.verdict} {against} by {spec.amount(abs(d.difference))} {m} {ci} {words}."
            way = "lower" if d.difference < 0 else "higher"
            return f"{arm} {t.verdict} {against}: {m} {spec.amount(abs(d.difference))} {way} {ci} {words}."
        way = "lower" if d.difference < 0 else "higher"
        lo, hi = sorted((abs(t.low), abs(t.high)))
        ci = f"({pct} simultaneous CI {spec.amount(lo)} to {spec.amount(hi)} {way}; {holm})"
        return f"{arm} {t.verdict} {against}: {m} {spec.amount(abs(d.difference))} {way} {ci} {words}."
    diff = f"{spec.amount(d.difference, sign=True)} {m}" + ("" if spec.higher_is_better else " (lower is better)")
    return (
        f"{arm} did not beat {against} {words}: the difference was {diff} ({signed}; {holm}), no significant "
        "difference."
    )


def _many_arms(results: CompareResults, summary: Summary, *, n_resamples: int, seed: int) -> None:
    """Fill in what a comparison of many arms adds to the summary: the paired differences against the
    ``also_against`` arms, each label fraction's family of tests with Holm's adjustment (verdicts and sentences;
    with one test in a family the sentence stays the single test's), seconds per epoch, and the ranking."""
    metric, ref, confidence = summary.primary_metric, summary.reference, summary.confidence
    also = also_against_arms(results)
    summary.also_against = also
    repeat = _repeat_kwargs(results)
    done = {}
    for r in results.runs:
        if r.ok:
            done.setdefault((r.arm, round(r.fraction, 9)), {})[_pair_key(r)] = r
    for row in summary.rows:
        runs = done.get((row.arm, round(row.fraction, 9)), {})
        row.seconds_per_epoch = _seconds_per_epoch(list(runs.values()))
        if row.arm == ref:
            continue
        for other in also:
            theirs = done.get((other, round(row.fraction, 9)), {})
            pairs = [(runs[k], theirs[k]) for k in sorted(runs) if k in theirs]
            pairs = [(a, b) for a, b in pairs if a.predictions is not None and b.predictions is not None]
            if other == row.arm or not pairs:
                continue
            row.vs_also[other] = paired_difference(
                [a.predictions for a, _ in pairs],
                [b.predictions for _, b in pairs],
                metric,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
                **repeat,
            )
    for fraction in results.fractions:
        rows = [r for r in summary.rows if abs(r.fraction - fraction) < 1e-9]
        entries = [(r, ref, r.vs_reference) for r in rows if r.arm != ref and r.vs_reference is not None]
        entries += [(r, other, d) for r in rows for other, d in r.vs_also.items()]
        judged = [d.verdict_allowed for _, _, d in entries]
        m = sum(judged)
        p_holm = holm_adjust([d.p_value if ok else math.nan for (_, _, d), ok in zip(entries, judged, strict=True)])
        for (row, against, d), ok, p in zip(entries, judged, p_holm, strict=True):
            if ok:
                low, high, level = simultaneous_interval(d, m, confidence)
                reject = d.significant if m == 1 else bool(p < 1 - confidence)
                verdict = ("beat" if summary.spec.better(d.difference) else "did worse than") if reject else None
            else:
                low, high, level = d.low, d.high, confidence
                verdict = None
            t = PairTest(
                row.arm,
                against,
                fraction,
                d,
                m if ok else 0,
                float(p),
                float(low),
                float(high),
                level,
                verdict or ("no significant difference" if ok else "no verdict"),
            )
            against_row = summary.row(against, fraction)
            at_chance = ""
            if against_row is not None and metric in against_row.metrics:
                at_chance = chance_note(summary.spec, against_row.metrics[metric], confidence)
            arm_name, against_name = results.arm(row.arm).display, results.arm(against).display + at_chance
            if ok and m > 1:
                reps = repetitions(d.n_seeds, summary.repetition)
                t.sentence = _family_sentence(
                    arm_name, against_name, t, row.fraction_used, confidence, summary.unit, reps
                )
            elif against == ref:
                t.sentence = row.sentence  # the single test's own verdict, as made by summarize
            else:
                t.sentence = _verdict(
                    arm_name,
                    against_name,
                    d,
                    fraction,
                    confidence,
                    row.fraction_used,
                    summary.unit,
                    summary.repetition,
                )
            if against == ref:
                row.sentence = t.sentence
            else:
                row.also_sentences[against] = t.sentence
            summary.tests.append(t)
    _rank(results, summary)


def _rank(results: CompareResults, summary: Summary) -> None:
    """Order the arms by mean primary metric at the largest label fraction with results (best first; the order of
    the means, not a test: the verdicts beside each arm say which differences are real)."""
    metric = summary.primary_metric
    with_results = [
        f for f in results.fractions if any(r.n_ok and metric in r.metrics for r in summary.rows if r.fraction == f)
    ]
    if not with_results:
        return
    fraction = max(with_results)
    summary.ranking_fraction = fraction
    up = summary.spec.higher_is_better
    against = [summary.reference, *summary.also_against]

    def mean_of(arm: str) -> float:
        row = summary.row(arm, fraction)
        ci = row.metrics.get(metric) if row is not None else None
        return ci.mean if ci is not None and np.isfinite(ci.mean) else math.nan

    order = sorted(
        results.arms, key=lambda a: (not np.isfinite(mean_of(a.name)), -mean_of(a.name) if up else mean_of(a.name))
    )
    mirrored = {"beat": "did worse than", "did worse than": "beat"}
    rank = 0
    for arm in order:
        row = summary.row(arm.name, fraction)
        finite = bool(np.isfinite(mean_of(arm.name)))
        rank += int(finite)
        verdicts = {}
        for other in against:
            t = summary.test(arm.name, other, fraction)
            back = summary.test(other, arm.name, fraction) if t is None else None  # scratch against ImageNet
            if other == arm.name:
                verdicts[other] = "(itself)"
            elif t is None and back is None:
                verdicts[other] = "n/a"
            elif (t or back).verdict == "no verdict":
                verdicts[other] = "no verdict"
            elif t is not None:
                verdicts[other] = f"{t.verdict} (p {_p_text(t.p_holm)})"
            else:
                verdicts[other] = f"{mirrored.get(back.verdict, back.verdict)} (p {_p_text(back.p_holm)})"
        n_params = (arm.provenance or {}).get("n_parameters")
        summary.ranking.append(
            RankedArm(
                rank if finite else None,
                arm.name,
                row.metrics.get(metric) if row is not None else None,
                verdicts,
                row.seconds_per_epoch if row is not None else None,
                int(n_params) if n_params is not None else None,
            )
        )


# ------------------------------------------------------------------------------------------ results
