"""The results of a comparison: its arms and one record per (arm, seed, label fraction) run.

These plain data structures are what the summary (:mod:`medtl.comparison.summary`), the report, the plots,
``results.json`` and ``results.csv`` are made from. They can be built by hand (tests do) or read from finished
run folders (:func:`record_from_run_dir`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medtl.comparison.stats import PatientData
from medtl.metric_specs import metric_spec, metrics_for_task

if TYPE_CHECKING:
    from medtl.comparison.summary import Summary

__all__ = [
    "Arm",
    "RunRecord",
    "CompareResults",
    "record_from_run_dir",
    "read_metrics_csv",
    "results_csv_fields",
    "RESULTS_CSV_FIELDS",
]


@dataclass
class Arm:
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
        test_metrics: test metrics, computed by medtl from the per-patient predictions (segmentation: the mean
            over patients of per-patient Dice, HD95 in mm, surface Dice, overall and per class).
        predictions: per-patient test predictions as the run's task aggregates them
            (:meth:`medtl.tasks.base.Task.patient_units`): probabilities averaged over each patient's scans
            (classification), metric values averaged over each patient's scans (segmentation), ...
        curve: one dict per epoch: "epoch", "time_s" and the validation metrics ("val_auroc", "val_dice", ...).
        fraction_used: share of the training patients whose labels the run actually used (label
            fractions round up and keep at least one patient per class, so 10% can be 16.7%);
            ``None`` when not known.
        fold: the cross-validation fold the run was validated on (``compare.repeat: folds`` or ``both``), else
            ``None``.
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
    predictions: PatientData | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    fraction_used: float | None = None
    fold: int | None = None

    @property
    def repetition(self) -> tuple[int, int]:
        """What pairs the run with the other arms' runs: its seed and fold (-1: no folds)."""
        return (self.seed, -1 if self.fold is None else self.fold)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def best_val(self, metric: str) -> float:
        """The best validation value of ``metric`` over the epochs (the lowest for HD95)."""
        vals = [c.get(f"val_{metric}", math.nan) for c in self.curve]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        if not vals:
            return math.nan
        return float(max(vals)) if metric_spec(metric).higher_is_better else float(min(vals))

    def n_left_out(self, metric: str) -> int:
        """Test patients left out of ``metric`` because it was undefined for all their scans (segmentation)."""
        p = self.predictions
        return p.n_left_out(metric) if p is not None and metric in p.metric_names else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["predictions"] = self.predictions.to_dict() if self.predictions is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        d = dict(d)
        preds = d.pop("predictions", None)
        rec = cls(**d)
        if preds:
            from medtl.tasks import task_class

            rec.predictions = task_class(preds.get("kind") or "classification").units_from_dict(preds)
        return rec


#: The columns of results.csv around the test metrics (``test_<metric>`` for each metric of the task, and the
#: columns the task adds, come before ``run_dir``: :func:`results_csv_fields`).
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
    "run_dir",
]


@dataclass
class CompareResults:
    """Everything a comparison produced: its arms, its runs and (once computed) its summary."""

    arms: list[Arm]
    runs: list[RunRecord]
    classes: list[str]
    seeds: list[int]
    fractions: list[float]
    primary_metric: str = "auroc"
    reference: str = "scratch"
    config: dict[str, Any] = field(default_factory=dict)
    compare_dir: str | None = None
    summary: Summary | None = None
    task: str = "classification"
    overlays: dict[str, list[str]] = field(default_factory=dict)
    #: the cross-validation folds each (arm, seed, fraction) ran on (``compare.repeat``), empty when none
    folds: list[int] = field(default_factory=list)

    @property
    def fold_ratio(self) -> float:
        """Nadeau and Bengio's ``n_left_out / n_train`` of the folds (0 without folds):
        :func:`medtl.comparison.stats.fold_ratio`."""
        from medtl.comparison.stats import fold_ratio

        return fold_ratio(len(self.folds)) if self.folds else 0.0

    @property
    def task_class(self) -> Any:
        """The task of the comparison (:mod:`medtl.tasks`)."""
        from medtl.tasks import task_class

        return task_class(self.task)

    def metric_names(self) -> list[str]:
        """The test metrics of the runs: the task's metrics first, then their per-class (per-finding) forms."""
        names = list(metrics_for_task(self.task))
        derived = sorted({k for r in self.runs for k in r.test_metrics if k not in names})
        return [*names, *derived]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def run(self, arm: str, seed: int, fraction: float, fold: int | None = None) -> RunRecord | None:
        for r in self.runs:
            if r.arm == arm and r.seed == seed and abs(r.fraction - fraction) < 1e-9 and r.fold == fold:
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
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
            "overlays": self.overlays,
            "folds": self.folds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareResults:
        """Arms, runs and settings from :meth:`to_dict` output (the summary is recomputed, not read)."""
        return cls(
            arms=[Arm(**a) for a in d["arms"]],
            runs=[RunRecord.from_dict(r) for r in d["runs"]],
            classes=list(d["classes"]),
            seeds=[int(s) for s in d["seeds"]],
            fractions=[float(f) for f in d["fractions"]],
            primary_metric=d.get("primary_metric", "auroc"),
            reference=d.get("reference", "scratch"),
            config=d.get("config", {}),
            compare_dir=d.get("compare_dir"),
            task=d.get("task", "classification"),
            overlays={k: list(v) for k, v in (d.get("overlays") or {}).items()},
            folds=[int(k) for k in d.get("folds") or []],
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
        metrics = self.metric_names()
        extra = list(self.task_class.results_columns(self, RunRecord("", 0, 0.0)))
        fields = results_csv_fields(metrics, extra)
        if self.folds:
            fields.insert(fields.index("seed") + 1, "fold")
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in sorted(self.runs, key=lambda r: (r.fraction, r.arm, r.repetition)):
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
            if self.folds:
                row["fold"] = "" if r.fold is None else r.fold
            for m in metrics:
                row[f"test_{m}"] = _num(r.test_metrics.get(m, math.nan)) if r.ok else ""
            row |= self.task_class.results_columns(self, r)
            w.writerow(row)
        atomic_write_bytes(path, buf.getvalue().encode())
        return Path(path)


def results_csv_fields(metrics: list[str], extra: list[str] | None = None) -> list[str]:
    """The columns of results.csv for these test metrics and the task's own columns (``extra``)."""
    fields = [f for f in RESULTS_CSV_FIELDS if f != "run_dir"]
    return fields + [f"test_{m}" for m in metrics] + list(extra or []) + ["run_dir"]


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
    """Rows of a run's ``metrics.csv`` as floats (:meth:`medtl.rundir.RunDir.read_metrics`)."""
    from medtl.rundir import RunDir

    return RunDir(Path(path).parent).read_metrics()


def record_from_run_dir(
    run_dir: str | Path,
    *,
    arm: str,
    seed: int,
    fraction: float,
    classes: list[str],
    task: str | None = None,
    fold: int | None = None,
) -> RunRecord:
    """A :class:`RunRecord` from a finished run directory (result.json, metrics.csv, predictions_test.csv).

    Test metrics are recomputed here from the per-patient units of the run's task
    (:meth:`medtl.tasks.base.Task.patient_units`: a segmentation run's per-scan metric rows averaged per patient, a
    classification run's probabilities), so every arm is scored the same way and the paired statistics use exactly
    the numbers the table shows. The task is the run's own (``result.json``), else ``task``.
    """
    from medtl.rundir import RunDir
    from medtl.tasks import task_class

    run = RunDir(run_dir)
    rec = RunRecord(arm=arm, seed=seed, fraction=fraction, run_dir=str(run.path), fold=fold)
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
        rec.predictions = task_class(str(result.get("task") or task or "classification")).patient_units(run, classes)
        rec.test_metrics = {m: rec.predictions.metric(m) for m in rec.predictions.metric_names}
    elif rec.status == "ok":
        rec.status = "failed"
        rec.error = f"{preds} is missing: the run did not write test predictions"
    return rec
