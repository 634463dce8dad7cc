"""The results of a comparison: one record per (arm, seed, label fraction) run, and their summary.

These plain data structures are what the report, the plots, ``results.json`` and ``results.csv`` are
made from. They can be built by hand (tests do) or read from finished run directories
(:func:`record_from_run_dir`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.evaluate.stats import (
    METRIC_NAMES,
    METRICS,
    MIN_SEEDS_FOR_VERDICT,
    MeanCI,
    PairedDifference,
    PatientPredictions,
    aggregate_by_patient,
    censored_median,
    compute_metric,
    convergence,
    mean_ci,
    paired_difference,
    plateau,
    seeds_needed,
    smooth_scores,
)

__all__ = [
    "ArmSpec",
    "RunRecord",
    "CompareResults",
    "ArmFractionSummary",
    "Summary",
    "summarize",
    "record_from_run_dir",
    "read_metrics_csv",
    "read_predictions_csv",
    "fraction_words",
    "used_words",
    "RESULTS_CSV_FIELDS",
    "CONVERGENCE_TOLERANCE",
    "CONVERGENCE_WINDOW",
]

#: How close (in units of the primary metric) to the common validation plateau counts as "reached".
CONVERGENCE_TOLERANCE = 0.02
#: Validation scores are smoothed by a trailing mean over this many epochs before looking for the crossing.
CONVERGENCE_WINDOW = 3


@dataclass
class ArmSpec:
    """One arm of a comparison: a backbone, its starting weights and how it is trained.

    Attributes:
        name: short identifier used in folder names ("imagenet", "scratch").
        arch: architecture name (see ``medtl backbones``).
        weights: weight source name or a checkpoint path; "scratch" for random initialisation.
        schedule: "fine_tune" (frozen body first, then discriminative rates) or "one_cycle".
        mode: "2d", "3d" or "2.5d".
        in_channels: input channels of the model (``None`` = the data's own).
        label: name shown in the report ("MobileNetV2 ImageNet").
        provenance: the weight source's record (licence, citation, sha256...) once known.
        load_report: the summary of what was loaded, matched, adapted and left random.
        overrides: the arm's own experiment overrides by dotted key (its ``augment``).
    """

    name: str
    arch: str
    weights: str = "scratch"
    schedule: str = "one_cycle"
    mode: str | None = None
    in_channels: int | None = None
    label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    load_report: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def is_scratch(self) -> bool:
        return self.weights == "scratch"


@dataclass
class RunRecord:
    """One training run of one arm with one seed on one label fraction.

    Attributes:
        arm: the arm's name.
        seed: the seed (training patients drawn and model initialised with it).
        fraction: fraction of the training patients whose labels were used.
        status: "ok", "failed" or "pending".
        error: the error message of a failed run.
        run_dir: the run's directory.
        seconds: wall-clock seconds of the run.
        best_epoch: the epoch whose checkpoint was evaluated on the test set.
        n_train_patients: training patients the run used.
        test_metrics: test metrics, computed by medtl from the per-patient predictions.
        predictions: per-patient test predictions (probabilities averaged over each patient's scans).
        curve: one dict per epoch: "epoch", "time_s" and the validation metrics ("val_auroc", ...).
        fraction_used: share of the training patients whose labels the run actually used (label
            fractions round up and keep at least one patient per class, so 10% can be 16.7%);
            ``None`` when not known.
    """

    arm: str
    seed: int
    fraction: float
    status: str = "pending"
    error: str | None = None
    run_dir: str | None = None
    seconds: float | None = None
    best_epoch: int | None = None
    n_train_patients: int | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    predictions: PatientPredictions | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    fraction_used: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def best_val(self, metric: str) -> float:
        vals = [c.get(f"val_{metric}", math.nan) for c in self.curve]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return float(max(vals)) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["predictions"] = self.predictions.to_dict() if self.predictions is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        d = dict(d)
        preds = d.pop("predictions", None)
        rec = cls(**d)
        rec.predictions = PatientPredictions.from_dict(preds) if preds else None
        return rec


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
        convergence: per seed, the epoch and seconds at which this arm and the reference reached the
            lower of their two validation plateaus minus :data:`CONVERGENCE_TOLERANCE`, and their
            censored medians (see :func:`_convergence`).
        sentence: the verdict in words.
        fraction_used: mean over the runs of the share of training patients actually used (``None``
            when the runs did not record it).
    """

    arm: str
    fraction: float
    n_ok: int
    n_failed: int
    metrics: dict[str, MeanCI]
    best_val: MeanCI
    seconds: float | None
    vs_reference: PairedDifference | None = None
    convergence: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    fraction_used: float | None = None

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
            "convergence": self.convergence,
            "sentence": self.sentence,
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

    def row(self, arm: str, fraction: float) -> ArmFractionSummary | None:
        for r in self.rows:
            if r.arm == arm and abs(r.fraction - fraction) < 1e-9:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_metric": self.primary_metric,
            "reference": self.reference,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "min_seeds": self.min_seeds,
            "convergence_tolerance": self.convergence_tolerance,
            "convergence_window": self.convergence_window,
            "warnings": self.warnings,
            "rows": [r.to_dict() for r in self.rows],
        }


METRIC_WORDS = {"auroc": "AUROC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "f1": "F1"}


def used_words(fraction: float, fraction_used: float | None) -> str:
    """' (16.7% actually used)' when the share of patients used differs from the fraction asked for, else ''."""
    if fraction_used is None or not np.isfinite(fraction_used) or abs(fraction_used - fraction) < 0.005:
        return ""
    return f" ({fraction_used * 100:.1f}% actually used)"


def _too_few_seeds(d: PairedDifference) -> str:
    """What to do when there are too few seeds for a verdict, with a seed count where one can be estimated."""
    k = d.n_seeds
    base = f"at least {MIN_SEEDS_FOR_VERDICT} seeds per arm are needed for any verdict (compare.seeds)"
    if k < 2 or not np.isfinite(d.seed_sd):
        return f"Run more: {base}; 5 seeds give an interval about half as wide as 3 when training noise dominates."
    need = seeds_needed(d.difference, d.seed_sd, d.shared_patient_se, d.n_patients, confidence=d.confidence)
    if need is None:
        return (
            f"Run more: {base}. With the seed SD seen here ({d.seed_sd:.3f}) and these test patients "
            f"(patient SE {d.patient_se:.3f}), even 50 seeds would not resolve a difference this small."
        )
    return (
        f"Run more: {base}; with the seed SD seen here ({d.seed_sd:.3f}), a difference of this size would "
        f"need about {need} seeds per arm to be resolved."
    )


def _verdict(
    arm: str,
    ref: str,
    d: PairedDifference | None,
    fraction: float,
    confidence: float,
    fraction_used: float | None = None,
) -> str:
    words = fraction_words(fraction) + used_words(fraction, fraction_used)
    if d is None or not np.isfinite(d.difference):
        return f"{arm} could not be compared with {ref} {words} (no paired test predictions)."
    m = METRIC_WORDS.get(d.metric, d.metric)
    diff = f"{d.difference:+.3f} {m}"
    k = d.n_seeds
    if k < MIN_SEEDS_FOR_VERDICT:
        seeds = f"{k} seed" + ("s" if k != 1 else "")
        return (
            f"{arm} differed from {ref} by {diff} {words}, but with {seeds} per arm training noise cannot be "
            f"separated from an effect: no verdict. {_too_few_seeds(d)}"
        )
    if not d.estimable:
        return (
            f"{arm} differed from {ref} by {diff} {words}, but its uncertainty is not estimable: every seed and "
            "every resample of test patients gave the same difference (identical arms, or constant outputs). "
            "No verdict."
        )
    pct = f"{confidence * 100:.0f}%"
    ci = f"({pct} CI {d.low:.3f} to {d.high:.3f}; {k} seeds, {d.n_patients} test patients)"
    if d.low > 0:
        return f"{arm} beat {ref} by {d.difference:.3f} {m} {ci} {words}."
    if d.high < 0:
        return f"{arm} did worse than {ref} by {-d.difference:.3f} {m} {ci} {words}."
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
    lower of the two plateaus minus :data:`CONVERGENCE_TOLERANCE`. Both runs are measured against the
    same target in the same way, so two identical arms get the same answer in distribution (comparing
    one arm's first crossing with the other's best epoch, a selection-biased maximum, showed "never" for
    half the seeds of identical arms). A run that does not reach the target (its curve stops or has no
    scores) is censored at its last epoch and kept in the Kaplan-Meier median, not dropped.
    """
    per_seed: dict[str, dict[str, Any]] = {}
    for run, ref in pairs:
        if not run.curve or not ref.curve:
            continue
        e, t, s = _curve(run, metric)
        ref_e, ref_t, ref_s = _curve(ref, metric)
        smooth, ref_smooth = smooth_scores(s, CONVERGENCE_WINDOW), smooth_scores(ref_s, CONVERGENCE_WINDOW)
        level, ref_level = plateau(smooth), plateau(ref_smooth)
        target = min(level, ref_level) - CONVERGENCE_TOLERANCE
        if not np.isfinite(target):
            continue
        c = convergence(e, t, smooth, target)
        cr = convergence(ref_e, ref_t, ref_smooth, target)
        per_seed[str(run.seed)] = c.to_dict() | {
            "plateau": level,
            "reference_plateau": ref_level,
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
        "tolerance": CONVERGENCE_TOLERANCE,
        "window": CONVERGENCE_WINDOW,
    }


def summarize(results: CompareResults, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Summary:
    """Per arm and fraction: mean/CI over seeds, the paired difference to the reference arm, convergence.

    The paired difference pairs each arm's run with the reference's run of the same seed (see
    :func:`~medtl.evaluate.stats.paired_difference` for its interval over seeds and patients);
    convergence is described in :func:`_convergence`.
    """
    metric = results.primary_metric
    ref = results.reference
    rows: list[ArmFractionSummary] = []
    for arm in results.arms:
        for fraction in results.fractions:
            runs = [r for r in results.runs if r.arm == arm.name and abs(r.fraction - fraction) < 1e-9]
            ok = sorted((r for r in runs if r.ok), key=lambda r: r.seed)
            metric_names = sorted({k for r in ok for k in r.test_metrics}, key=lambda k: (k != metric, k))
            metrics = {
                k: mean_ci([r.test_metrics.get(k, math.nan) for r in ok], confidence, bounds=(0.0, 1.0))
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
                best_val=mean_ci([r.best_val(metric) for r in ok], confidence, bounds=(0.0, 1.0)),
                seconds=float(np.mean(secs)) if secs else None,
                fraction_used=float(np.mean(used)) if used else None,
            )
            ref_runs = {r.seed: r for r in results.runs if r.arm == ref and abs(r.fraction - fraction) < 1e-9 and r.ok}
            if arm.name != ref and ref_runs:
                pairs = [(r, ref_runs[r.seed]) for r in ok if r.seed in ref_runs]
                with_preds = [(a, b) for a, b in pairs if a.predictions is not None and b.predictions is not None]
                if with_preds:
                    row.vs_reference = paired_difference(
                        [a.predictions for a, _ in with_preds],
                        [b.predictions for _, b in with_preds],
                        metric,
                        n_resamples=n_resamples,
                        confidence=confidence,
                        seed=seed,
                    )
                row.convergence = _convergence(pairs, metric)
                row.sentence = _verdict(
                    results.arm(arm.name).display,
                    results.arm(ref).display,
                    row.vs_reference,
                    fraction,
                    confidence,
                    row.fraction_used,
                )
            rows.append(row)
    return Summary(metric, ref, rows, confidence, n_resamples, _warnings(results))


def _warnings(results: CompareResults) -> list[str]:
    """Problems a reader must know before trusting a verdict."""
    out = []
    for arm in results.arms:
        runs = [r for r in results.runs if r.arm == arm.name and r.ok and r.predictions is not None]
        constant = [
            r for r in runs if len(r.predictions) > 1 and float(np.ptp(r.predictions.probs, axis=0).max()) < 1e-4
        ]
        if constant:
            out.append(
                f"{arm.display}: in {len(constant)} of {len(runs)} runs the model gave every test patient the same "
                "probability, to within 0.0001 (it predicts nothing; typical of a network whose batch-norm "
                "statistics did not settle in a short training). Differences against this arm measure that "
                "failure, not the value of pretraining; train longer or with smaller batches."
            )
        failed = [r for r in results.runs if r.arm == arm.name and r.status == "failed"]
        if failed:
            out.append(f"{arm.display}: {len(failed)} run(s) failed; see 'Failed runs'.")
    return out


# ------------------------------------------------------------------------------------------ results


RESULTS_CSV_FIELDS = [
    "arm",
    "arch",
    "weights",
    "seed",
    "fraction",
    "fraction_used",
    "status",
    "error",
    "n_train_patients",
    "seconds",
    "best_epoch",
    "best_val",
    *[f"test_{m}" for m in METRIC_NAMES],
    "run_dir",
]


@dataclass
class CompareResults:
    """Everything a comparison produced: its arms, its runs and (once computed) its summary."""

    arms: list[ArmSpec]
    runs: list[RunRecord]
    classes: list[str]
    seeds: list[int]
    fractions: list[float]
    primary_metric: str = "auroc"
    reference: str = "scratch"
    config: dict[str, Any] = field(default_factory=dict)
    compare_dir: str | None = None
    summary: Summary | None = None

    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def run(self, arm: str, seed: int, fraction: float) -> RunRecord | None:
        for r in self.runs:
            if r.arm == arm and r.seed == seed and abs(r.fraction - fraction) < 1e-9:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_metric": self.primary_metric,
            "reference": self.reference,
            "classes": self.classes,
            "seeds": self.seeds,
            "fractions": self.fractions,
            "arms": [asdict(a) for a in self.arms],
            "summary": self.summary.to_dict() if self.summary else None,
            "runs": [r.to_dict() for r in self.runs],
            "config": self.config,
            "compare_dir": self.compare_dir,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareResults:
        """Arms, runs and settings from :meth:`to_dict` output (the summary is recomputed, not read)."""
        return cls(
            arms=[ArmSpec(**a) for a in d["arms"]],
            runs=[RunRecord.from_dict(r) for r in d["runs"]],
            classes=list(d["classes"]),
            seeds=[int(s) for s in d["seeds"]],
            fractions=[float(f) for f in d["fractions"]],
            primary_metric=d.get("primary_metric", "auroc"),
            reference=d.get("reference", "scratch"),
            config=d.get("config", {}),
            compare_dir=d.get("compare_dir"),
        )

    def write_json(self, path: str | Path) -> Path:
        from medtl.utils import atomic_write_bytes

        text = json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False)
        atomic_write_bytes(path, text.encode())
        return Path(path)

    def write_csv(self, path: str | Path) -> Path:
        import io

        from medtl.utils import atomic_write_bytes

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RESULTS_CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in sorted(self.runs, key=lambda r: (r.fraction, r.arm, r.seed)):
            arm = self.arm(r.arm)
            row = {
                "arm": r.arm,
                "arch": arm.arch,
                "weights": arm.weights,
                "seed": r.seed,
                "fraction": r.fraction,
                "fraction_used": _num(r.fraction_used),
                "status": r.status,
                "error": r.error or "",
                "n_train_patients": "" if r.n_train_patients is None else r.n_train_patients,
                "seconds": "" if r.seconds is None else f"{r.seconds:.1f}",
                "best_epoch": "" if r.best_epoch is None else r.best_epoch,
                "best_val": _num(r.best_val(self.primary_metric)) if r.ok else "",
                "run_dir": r.run_dir or "",
            }
            for m in METRIC_NAMES:
                row[f"test_{m}"] = _num(r.test_metrics.get(m, math.nan)) if r.ok else ""
            w.writerow(row)
        atomic_write_bytes(path, buf.getvalue().encode())
        return Path(path)


def _num(v: float | None) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.6g}"


def _jsonable(obj: Any) -> Any:
    """Replace nan/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -------------------------------------------------------------------------------------- run folders


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``metrics.csv`` as floats (:meth:`medtl.train.rundir.RunDir.read_metrics`)."""
    from medtl.train.rundir import RunDir

    return RunDir(Path(path).parent).read_metrics()


def read_predictions_csv(path: str | Path, classes: list[str]) -> PatientPredictions:
    """A run's ``predictions_<split>.csv`` aggregated per patient (``label`` may be the class name or index)."""
    from medtl.train.rundir import RunDir

    path = Path(path)
    split = path.stem.removeprefix("predictions_")
    pids, labels, probs = RunDir(path.parent).read_predictions(split, classes)
    return aggregate_by_patient(pids, labels, probs)


def record_from_run_dir(run_dir: str | Path, *, arm: str, seed: int, fraction: float, classes: list[str]) -> RunRecord:
    """A :class:`RunRecord` from a finished run directory (result.json, metrics.csv, predictions_test.csv).

    Test metrics are recomputed here from the per-patient predictions, so every arm is scored the
    same way and the paired statistics use exactly the numbers the table shows.
    """
    from medtl.train.rundir import RunDir

    run = RunDir(run_dir)
    rec = RunRecord(arm=arm, seed=seed, fraction=fraction, run_dir=str(run.path))
    result = run.read_result()
    rec.status = str(result.get("status", "pending"))
    rec.error = result.get("error")
    rec.seconds = result.get("seconds")
    rec.best_epoch = result.get("best_epoch")
    used, total = run.train_patient_counts()
    n_patients = result.get("n_patients")
    rec.n_train_patients = n_patients.get("train") if isinstance(n_patients, dict) else (used or None)
    rec.fraction_used = used / total if total else None
    rec.curve = run.read_metrics()
    preds = run.predictions_file("test")
    if rec.status == "ok" and preds.is_file():
        rec.predictions = read_predictions_csv(preds, classes)
        rec.test_metrics = {m: compute_metric(m, rec.predictions.labels, rec.predictions.probs) for m in METRICS}
    elif rec.status == "ok":
        rec.status = "failed"
        rec.error = f"{preds} is missing: the run did not write test predictions"
    return rec
