"""Regression: one number per scan (an age, a volume, a score, a size in mm), from the manifest's label column.

Manifest. ``data.label_column`` (default ``label``) holds a finite number in every row; the CSV is read with the
checks every task shares (images, patients, splits, duplicate scans) and the column is parsed here, never made
into classes: a blank, non-numeric, NaN or infinite cell is one error naming the rows. A column of a few distinct
integers (a 0-4 score) is fine: ``task: regression`` says it is a quantity. Records get ``target`` (the float) and
``label_name`` (the cell as written); their ``label`` is the patient's bin (below), which only stratifies.

Splits. Patients are stratified by equal-count (quantile) bins of their mean target (``regression.bins``, default
5; fewer when the patients are too few for every bin to give at least one validation and one test patient:
:func:`number_of_bins`); ties in the mean are ordered by the pseudonymised patient ID, so the bins are the same
for the same manifest. The split and the nested label fractions are then the stratified ones of
:mod:`medtl.data.splits` (a label fraction takes the first patients of each bin's seeded order).

Learning. One output. With ``regression.standardize`` (the default) the loss compares the output with
``(target - mean) / SD``, the mean and SD of the training scans' targets (each training scan counted once, after
the label fraction; the slices of a 2.5D scan do not weigh more), and outputs become ``output * SD + mean`` in
:meth:`RegressionTask.outputs_to_scores`, so every metric, prediction CSV and comparison number is in the label's
units. The mean and SD are the task's state, kept in the run's ``preprocessing.json`` for ``predict`` and
``evaluate``. Losses: ``mse``, ``l1`` or ``huber`` (default: squared within ``huber_delta`` training SDs of the
target, absolute beyond, so a few outlying or mistyped labels cannot dominate the gradients while most errors
train as with MSE).

Metrics (per scan; :data:`medtl.metric_specs.METRICS`): ``mae`` (the default monitor and primary metric, lower is
better, in ``regression.unit``), ``rmse``, ``r2`` (scikit-learn's ``r2_score``; NaN with fewer than 2 scans or
constant targets) and ``pearson_r`` (scipy; NaN when predictions or targets are constant). Predictions CSV:
``image, patient_id, [label], pred``, ``pred`` in the label's units.

Comparison. Each patient's predictions and targets are averaged over the patient's scans
(:class:`PatientRegression`); the run's metrics are computed over patients, on every bootstrap resample at once with
weighted formulas. MAE is lower-is-better, so the verdict says "lower"/"higher" with the unit, and the convergence
column uses 2% of the plateau (:attr:`~medtl.metric_specs.MetricSpec.relative_tolerance`). The report adds a
predicted-vs-true scatter plot per arm.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.data.dataset import SampleDataset
from medtl.errors import ManifestError, RunDirError
from medtl.metric_specs import metric_spec, metrics_for_task
from medtl.tasks.base import Task

__all__ = [
    "RegressionTask",
    "PatientRegression",
    "StandardisedLoss",
    "TargetDataset",
    "parse_targets",
    "number_of_bins",
    "target_bins",
    "regression_metrics",
    "plot_predicted_vs_true",
]

#: the regression metrics of the registry (mae, rmse, r2, pearson_r)
REG_METRICS = metrics_for_task("regression")
#: how many rows an error message lists per kind of problem
_SHOWN = 8


# ---------------------------------------------------------------------------------------------- manifest


def _label_key(extra: Mapping[str, str], column: str) -> str | None:
    """The header spelling of ``column`` among a record's extra columns (matched with case ignored)."""
    return next((k for k in extra if k.strip().lower() == column.strip().lower()), None)


def parse_targets(manifest: Any, column: str) -> list[tuple[float, str]]:
    """The number of each row of ``manifest`` (read with ``label_column=None``) in ``column``, with its text.

    Raises:
        ManifestError: the column is missing, or rows hold no finite number (blank, not a number, NaN, inf); one
            message names every such row.
    """
    path = manifest.path
    records = list(manifest)
    extra = records[0].extra if records else {}
    key = _label_key(extra, column)
    if key is None:
        close = difflib.get_close_matches(column, list(extra), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        others = ", ".join(repr(k) for k in extra) or "none"
        raise ManifestError(
            f"manifest {path} has no column {column!r}{hint}: a regression run reads its numbers from "
            f"data.label_column (the manifest's other columns: {others})",
            path=str(path),
            fix="set data.label_column to the column holding the numbers",
        )
    blank: list[int] = []
    wrong: list[tuple[int, str]] = []
    infinite: list[tuple[int, str]] = []
    out: list[tuple[float, str]] = []
    for r in records:
        text = (r.extra.get(key) or "").strip()
        value = math.nan
        if not text:
            blank.append(r.row)
        else:
            try:
                value = float(text)
            except ValueError:
                wrong.append((r.row, text))
            else:
                if not math.isfinite(value):
                    infinite.append((r.row, text))
        out.append((value, text))
    problems = []
    if blank:
        problems.append(f"empty in {_rows(blank)}")
    if wrong:
        comma = any("," in t for _, t in wrong)
        problems.append(
            f"not a number in {_rows_with_text(wrong)}" + (" (write decimals with a point: 1.5)" if comma else "")
        )
    if infinite:
        problems.append(f"not finite in {_rows_with_text(infinite)}")
    if problems:
        raise ManifestError(
            f"manifest {path}: column {key!r} must hold a finite number in every row (a regression target): "
            + "; ".join(problems),
            path=str(path),
            fix="fill in these rows or remove them (class names belong to task: classification)",
        )
    return out


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in rows[:_SHOWN]) + (f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else "")
    return ("row " if len(rows) == 1 else "rows ") + shown


def _rows_with_text(items: Sequence[tuple[int, str]]) -> str:
    shown = ", ".join(f"row {n} {t[:40]!r}" for n, t in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def number_of_bins(n_patients: int, bins: int, splits: Any) -> int:
    """How many target bins stratify ``n_patients``: ``bins``, fewer when a bin would be too small to give a
    validation and a test patient.

    A stratified split takes ``round(n * fraction)`` patients of each bin of ``n``; a bin of at least
    ``1 / fraction`` patients gives at least one for the smallest positive fraction (``val_fraction``, or one fold
    of ``folds``, and ``test_fraction``), so every bin holds at least that many.

    Args:
        n_patients: patients to split.
        bins: the bins asked for (``regression.bins``).
        splits: the config's ``splits`` section (``val_fraction``, ``test_fraction``, ``folds``).
    """
    val = 1.0 / splits.folds if getattr(splits, "folds", None) else float(splits.val_fraction)
    fractions = [f for f in (val, float(splits.test_fraction)) if f > 0]
    per_bin = math.ceil(1.0 / min(fractions) - 1e-9) if fractions else 1
    return max(1, min(int(bins), n_patients // max(per_bin, 1)))


def target_bins(patient_means: Mapping[str, float], bins: int) -> dict[str, int]:
    """Patient -> bin index: equal-count (quantile) bins of the patients' mean targets, lowest first.

    Patients are ranked by their mean (ties by patient ID) and cut into ``bins`` groups whose sizes differ by at
    most one; deterministic.
    """
    order = sorted(patient_means, key=lambda p: (patient_means[p], p))
    n = len(order)
    k = max(1, min(int(bins), n))
    return {p: i * k // n for i, p in enumerate(order)}


def _patient_means(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for r in records:
        sums.setdefault(str(r["patient_id"]), []).append(float(r["target"]))
    return {p: float(np.mean(v)) for p, v in sums.items()}


class TargetDataset(SampleDataset):
    """A :class:`~medtl.data.dataset.SampleDataset` whose samples also hold ``target``: the scan's number as a
    float32 tensor (NaN for a record without one: a scan given to ``predict`` without a manifest)."""

    def __getitem__(self, idx: int) -> dict[str, Any]:
        sample = super().__getitem__(idx)
        value = self.records[sample["scan"]].get("target")
        sample["target"] = torch.tensor(math.nan if value is None else float(value), dtype=torch.float32)
        return sample


# ------------------------------------------------------------------------------------------------ learning


class StandardisedLoss(nn.Module):
    """MSE, L1 or Huber between the first output and the standardised target ``(target - mean) / std``.

    Args:
        kind: ``mse``, ``l1`` or ``huber``.
        mean, std: the target's scaling (0 and 1: the raw target).
        delta: Huber's threshold, in standardised units.
    """

    def __init__(self, kind: str = "huber", mean: float = 0.0, std: float = 1.0, delta: float = 1.0) -> None:
        super().__init__()
        self.kind, self.mean, self.std, self.delta = kind, float(mean), float(std), float(delta)

    def elementwise(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One loss per sample."""
        pred = outputs.float().reshape(outputs.shape[0], -1)[:, 0]
        z = (targets.to(pred.device).float().reshape(-1) - self.mean) / self.std
        if self.kind == "mse":
            return (pred - z) ** 2
        if self.kind == "l1":
            return (pred - z).abs()
        return nn.functional.huber_loss(pred, z, reduction="none", delta=self.delta)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.elementwise(outputs, targets).mean()


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    if target.size < 2 or float(np.ptp(target)) == 0.0:
        return math.nan  # undefined: scikit-learn would say 0 or 1 by convention
    return float(r2_score(target, pred))


def _pearson(pred: np.ndarray, target: np.ndarray) -> float:
    from scipy import stats

    if target.size < 2 or float(np.ptp(target)) == 0.0 or float(np.ptp(pred)) == 0.0:
        return math.nan
    with warnings.catch_warnings():  # nearly constant input: scipy warns and may still answer; NaN if it cannot
        warnings.simplefilter("ignore")
        r = float(stats.pearsonr(pred, target)[0])
    return r if math.isfinite(r) else math.nan


def regression_metrics(pred: Any, target: Any) -> dict[str, Any]:
    """``n``, MAE, RMSE, R² (scikit-learn) and Pearson r (scipy) of predictions and targets (NaN where undefined)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {"n": int(y.size)}
    if y.size == 0:
        return out | dict.fromkeys(REG_METRICS, math.nan)
    err = p - y
    values = {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": _r2(p, y),
        "pearson_r": _pearson(p, y),
    }
    return out | {k: values[k] for k in REG_METRICS}


# ------------------------------------------------------------------------------------------------ compare


@dataclass
class PatientRegression:
    """Test predictions of one regression run, one unit per patient: the means over the patient's scans.

    Attributes:
        patient_id: one entry per patient (hashed IDs), sorted.
        pred: the patient's mean prediction, in the label's units.
        target: the patient's mean target.
        n_scans: scans averaged into each patient.
    """

    patient_id: np.ndarray
    pred: np.ndarray
    target: np.ndarray
    n_scans: np.ndarray

    def __len__(self) -> int:
        return int(self.patient_id.size)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return REG_METRICS

    @property
    def strata(self) -> None:
        """No strata: patients are resampled as one pool.

        MAE and RMSE are means over patients and need no balance; R² and r need some spread of the targets, which
        a resample of the test patients keeps. Resampling within target bins would hold the test set's mix of
        values fixed, and so leave out part of the variation that comes from which patients were tested.
        """
        return None

    def metric(self, name: str) -> float:
        """The run's value of ``name`` over the patients."""
        return float(self.weighted(name, np.ones((1, len(self))))[0])

    def weighted(self, name: str, counts: np.ndarray) -> np.ndarray:
        """``name`` on many patient resamples at once: row ``b`` of ``counts`` (B, n) holds how often each patient
        is drawn, and the value is the metric of the data set in which patient i appears ``counts[b, i]`` times.

        Weighted means: MAE ``Σw|e|/Σw``, RMSE ``sqrt(Σw e²/Σw)``, R² ``1 - Σw e² / Σw (y - ȳ_w)²``, Pearson r the
        weighted covariance over the weighted SDs (values centred on their plain means first, so large offsets
        lose no precision). NaN where undefined: fewer than 2 drawn, constant targets (R², r) or predictions (r).
        """
        from medtl.utils import look_up_option

        name = look_up_option(name, REG_METRICS, what="metric")
        w = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        if w.shape[1] == 0:
            return np.full(w.shape[0], math.nan)
        s = w.sum(axis=1)
        err = self.pred - self.target
        with np.errstate(invalid="ignore", divide="ignore"):
            if name == "mae":
                return np.where(s > 0, (w @ np.abs(err)) / s, math.nan)
            mse = (w @ err**2) / s
            if name == "rmse":
                return np.where(s > 0, np.sqrt(mse), math.nan)
            yc = self.target - self.target.mean()
            my = (w @ yc) / s
            vy = (w @ yc**2) / s - my**2
            flat_y = vy <= 1e-12 * ((w @ yc**2) / s) + 1e-300
            if name == "r2":
                return np.where((s >= 2) & ~flat_y, 1.0 - mse / vy, math.nan)
            pc = self.pred - self.pred.mean()
            mp = (w @ pc) / s
            vp = (w @ pc**2) / s - mp**2
            flat_p = vp <= 1e-12 * ((w @ pc**2) / s) + 1e-300
            cov = (w @ (pc * yc)) / s - mp * my
            r = np.clip(cov / np.sqrt(np.abs(vp * vy)), -1.0, 1.0)
            return np.where((s >= 2) & ~flat_y & ~flat_p, r, math.nan)

    def n_left_out(self, name: str) -> int:
        """Patients left out of ``name``: none (every metric uses every patient)."""
        return 0

    def delong_scores(self, name: str) -> None:
        """DeLong's test is about AUROC; it does not apply to a regression."""
        return None

    def same_units(self, other: PatientRegression) -> bool:
        return (
            len(self) == len(other)
            and bool((self.patient_id == other.patient_id).all())
            and bool(np.allclose(self.target, other.target, rtol=0, atol=1e-9 * (1 + np.abs(self.target).max())))
        )

    def align(self, other: PatientRegression) -> tuple[PatientRegression, PatientRegression]:
        """Both restricted to the patients they share, in the same order."""
        from medtl.bootstrap import common_units

        ia, ib = common_units([str(p) for p in self.patient_id], [str(p) for p in other.patient_id])
        return self._take(ia), other._take(ib)

    def _take(self, idx: np.ndarray) -> PatientRegression:
        return PatientRegression(self.patient_id[idx], self.pred[idx], self.target[idx], self.n_scans[idx])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": RegressionTask.name,
            "patient_id": [str(p) for p in self.patient_id],
            "pred": [float(v) for v in self.pred],
            "target": [float(v) for v in self.target],
            "n_scans": [int(n) for n in self.n_scans],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatientRegression:
        pids = np.asarray([str(p) for p in d["patient_id"]], dtype=object)
        return cls(
            pids,
            np.asarray(d["pred"], dtype=np.float64).reshape(-1),
            np.asarray(d["target"], dtype=np.float64).reshape(-1),
            np.asarray(d.get("n_scans") or [1] * len(pids), dtype=int),
        )

    @classmethod
    def from_scans(cls, patient_id: Sequence[str], pred: Sequence[float], target: Sequence[float]) -> PatientRegression:
        """Per-patient means of per-scan predictions and targets, patients sorted."""
        pids = np.asarray([str(p) for p in patient_id], dtype=object)
        p = np.asarray(pred, dtype=np.float64).reshape(-1)
        y = np.asarray(target, dtype=np.float64).reshape(-1)
        if not (pids.size == p.size == y.size):
            raise ValueError(f"patient_id ({pids.size}), pred ({p.size}) and target ({y.size}) differ in length")
        uniq, inverse = np.unique(pids, return_inverse=True)
        n = np.bincount(inverse, minlength=uniq.size)
        return cls(
            np.asarray(uniq, dtype=object),
            np.bincount(inverse, weights=p, minlength=uniq.size) / np.maximum(n, 1),
            np.bincount(inverse, weights=y, minlength=uniq.size) / np.maximum(n, 1),
            n.astype(int),
        )


def plot_predicted_vs_true(results: Any, path: str | Path, unit: str = "") -> Path | None:
    """Predicted vs true test values per arm at the largest label fraction: one point per patient (its
    predictions averaged over the seeds), the identity line, and each arm's MAE of those points in the legend.

    Returns ``None`` (no file) when no run has predictions.
    """
    from medtl.comparison.plots import _colors, _plt, _text

    f = max(results.fractions)
    spec = metric_spec("mae", unit=unit or None)
    name = results.classes[0] if results.classes else "target"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.5), dpi=100)
    lows, highs = [], []
    for arm, color in zip(results.arms, _colors(len(results.arms)), strict=True):
        preds = [
            r.predictions
            for r in results.runs
            if r.arm == arm.name and abs(r.fraction - f) < 1e-9 and r.ok and r.predictions is not None
        ]
        if not preds:
            continue
        ref = preds[0]
        for p in preds[1:]:
            ref, _ = ref.align(p)  # the patients every seed predicted
        if len(ref) == 0:
            continue
        pred = np.mean([ref.align(p)[1].pred for p in preds], axis=0)
        mae = float(np.mean(np.abs(pred - ref.target)))
        ax.scatter(
            ref.target, pred, s=16, alpha=0.75, color=color, label=f"{_text(arm.display)} (MAE {spec.amount(mae)})"
        )
        lows.append(min(float(ref.target.min()), float(pred.min())))
        highs.append(max(float(ref.target.max()), float(pred.max())))
    if not lows:
        plt.close(fig)
        return None
    lo, hi = min(lows), max(highs)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="grey", lw=0.8, label="identity")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)  # the same scale on both axes: the identity line is the diagonal
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(_text(f"true {name}{suffix}"))
    ax.set_ylabel(_text(f"predicted {name}{suffix}"))
    ax.set_title(f"Test predictions, {f * 100:g}% of labels\n(one point per patient, averaged over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------------- task


def _section(config: Any) -> Any:
    """The ``regression:`` section of a config, or a mapping of it (compare keeps configs as dicts)."""
    if isinstance(config, Mapping):
        return config.get(RegressionTask.name) or {}
    return getattr(config, RegressionTask.name, None)


@dataclass
class RegressionTask(Task):
    """One number per scan (see the module docstring).

    Args:
        classes: one name: the label column's (the predicted quantity).
        loss: ``mse``, ``l1`` or ``huber``.
        huber_delta: Huber's threshold, in standardised units.
        unit: the label's unit (shown with MAE and RMSE).
        standardize: learn the standardised target.
        target_mean, target_std: the training scans' target mean and SD (0 and 1 without ``standardize``).
        label_column, image_column, patient_column: the manifest columns, for manifests given to predict/evaluate.
    """

    classes: list[str]
    loss: str = "huber"
    huber_delta: float = 1.0
    unit: str = ""
    standardize: bool = True
    target_mean: float = 0.0
    target_std: float = 1.0
    label_column: str = "label"
    image_column: str = "image"
    patient_column: str = "patient_id"
    name = "regression"

    # ------------------------------------------------------------------ config, manifest, split
    @classmethod
    def read_manifest(cls, config: Any, *, check_files: bool = True) -> Any:
        """The manifest with the checks every task shares; its label column must hold numbers
        (:func:`parse_targets`)."""
        from medtl.data import Manifest

        manifest = Manifest.from_csv(
            config.data.manifest,
            check_files=check_files,
            labels_required=False,
            label_column=None,
            image_column=config.data.image_column,
            patient_column=config.data.patient_column,
        )
        parse_targets(manifest, config.data.label_column)
        return manifest

    @classmethod
    def records(cls, config: Any, manifest: Any) -> list[dict[str, Any]]:
        """The rows with ``target``, ``label_name`` (the number as written) and ``label``: the patient's target bin
        (:func:`number_of_bins`, :func:`target_bins`)."""
        targets = parse_targets(manifest, config.data.label_column)
        records = []
        for rec, (value, text) in zip(manifest, targets, strict=True):
            d = rec.to_dict()
            d.update(target=value, label_name=text)
            records.append(d)
        means = _patient_means(records)
        bins = target_bins(means, number_of_bins(len(means), config.regression.bins, config.splits))
        for d in records:
            d["label"] = bins[str(d["patient_id"])]
        return records

    @classmethod
    def output_names(cls, config: Any, manifest: Any) -> list[str]:
        return [config.data.label_column]

    @classmethod
    def patient_strata(cls, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Patient -> the bin of the patient's mean target, as :meth:`records` set it (``label``)."""
        return {str(r["patient_id"]): int(r["label"]) for r in records}

    @classmethod
    def split_label_text(cls, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Patient -> the patient's mean target (splits.csv's ``label``)."""
        return {p: f"{v:.6g}" for p, v in _patient_means(records).items()}

    # ------------------------------------------------------------------ the task of an experiment
    @classmethod
    def from_experiment(cls, config: Any, manifest: Any, pipeline: Any) -> RegressionTask:
        return cls._of(config, [config.data.label_column])

    @classmethod
    def from_state(cls, config: Any, state: dict[str, Any], pipeline: Any) -> RegressionTask:
        task = cls._of(config, list(state.get("classes") or [config.data.label_column]))
        task.target_mean = float(state.get("target_mean", 0.0))
        task.target_std = float(state.get("target_std", 1.0))
        task.unit = str(state.get("unit", task.unit))
        task.label_column = str(state.get("label_column", task.label_column))
        return task

    @classmethod
    def _of(cls, config: Any, classes: list[str]) -> RegressionTask:
        section = config.regression
        return cls(
            classes,
            loss=section.loss,
            huber_delta=section.huber_delta,
            unit=section.unit,
            standardize=section.standardize,
            label_column=config.data.label_column,
            image_column=config.data.image_column,
            patient_column=config.data.patient_column,
        )

    def state(self) -> dict[str, Any]:
        return super().state() | {
            "label_column": self.label_column,
            "unit": self.unit,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
        }

    def describe_labels(self, records: Sequence[dict[str, Any]]) -> str:
        y = np.asarray([float(r["target"]) for r in records if r.get("target") is not None])
        if not y.size:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        return f"n {y.size}: mean {y.mean():.4g}, SD {y.std():.3g}, {y.min():.4g} to {y.max():.4g}{unit}"

    def fit(self, experiment: Any) -> None:
        """The mean and SD of the training scans' targets (``regression.standardize``; each scan once, after the
        label fraction). A constant training target keeps SD 1: the outputs are then shifted, not scaled."""
        if not self.standardize:
            self.target_mean, self.target_std = 0.0, 1.0
            return
        y = np.asarray([float(r["target"]) for r in experiment.splits["train"]], dtype=np.float64)
        if y.size:
            sd = float(y.std())
            self.target_mean, self.target_std = float(y.mean()), sd if sd > 0 else 1.0

    def dataset(self, records: list[dict[str, Any]], pipeline: Any, **options: Any):
        return TargetDataset(records, pipeline, **options)

    def read_labelled(self, path: Path) -> list[dict[str, Any]]:
        """A manifest given to ``predict``/``evaluate``: the run's label column parsed as numbers."""
        from medtl.data import Manifest

        manifest = Manifest.from_csv(
            path,
            labels_required=False,
            label_column=None,
            image_column=self.image_column,
            patient_column=self.patient_column,
        )
        records = []
        for rec, (value, text) in zip(manifest, parse_targets(manifest, self.label_column), strict=True):
            d = rec.to_dict()
            d.update(target=value, label_name=text, label=0)
            records.append(d)
        return records

    # ------------------------------------------------------------------ the network and its training
    @property
    def num_outputs(self) -> int:
        return 1

    def metric_spec(self, name: str) -> Any:
        return metric_spec(name, unit=self.unit or None)

    def make_loss(self) -> nn.Module:
        return StandardisedLoss(self.loss, self.target_mean, self.target_std, self.huber_delta)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's targets in the label's units, float (B,) (the loss standardises them)."""
        return batch["target"].float().reshape(-1)

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return StandardisedLoss(self.loss, self.target_mean, self.target_std, self.huber_delta).elementwise(
            outputs, targets
        )

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """The first output in the label's units: ``output * SD + mean`` (B, 1)."""
        return outputs.float()[:, :1] * self.target_std + self.target_mean

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample values to one per scan, sorted by scan (a 2.5D scan's slices averaged; targets kept as
        floats, float64)."""
        ids, inverse = torch.unique(scans.long(), sorted=True, return_inverse=True)
        n = ids.numel()
        values = scores.double().reshape(scores.shape[0], -1)
        sums = torch.zeros(n, values.shape[1], dtype=torch.float64).index_add_(0, inverse, values)
        counts = torch.zeros(n, dtype=torch.float64).index_add_(
            0, inverse, torch.ones_like(inverse, dtype=torch.float64)
        )
        out_targets = torch.full((n,), math.nan, dtype=torch.float64)
        out_targets[inverse] = targets.double().reshape(-1)
        return sums / counts[:, None], out_targets, ids

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        s = torch.as_tensor(scores).double()
        return regression_metrics(s.reshape(s.shape[0], -1)[:, 0] if s.numel() else s.reshape(-1), targets)

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The value logged as ``val_<key>``; NaN (an undefined R², a constant prediction's r) is logged as the
        worst value, so it is never an improvement."""
        value = float(metrics[key])
        if math.isnan(value):
            return math.inf if not self.metric_spec(key).higher_is_better else -math.inf
        return value

    # ------------------------------------------------------------------ a finished run
    def result_extras(self) -> dict[str, Any]:
        return {"unit": self.unit, "target_mean": self.target_mean, "target_std": self.target_std}

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        return ["image", "patient_id"] + (["label"] if with_labels else []) + ["pred"]

    def prediction_rows(
        self, records: Sequence[dict[str, Any]], scores: torch.Tensor, scan_ids: torch.Tensor, *, with_labels: bool
    ) -> list[dict[str, Any]]:
        rows = []
        values = torch.as_tensor(scores).double().reshape(len(scan_ids), -1)[:, 0].tolist() if len(scan_ids) else []
        for value, sid in zip(values, scan_ids.tolist(), strict=True):
            r = records[sid]
            row: dict[str, Any] = {"image": str(r["image"]), "patient_id": r.get("patient_id", "")}
            if with_labels:
                row["label"] = r.get("label_name") or f"{float(r['target']):.6g}"
            row["pred"] = float(value)
            rows.append(row)
        return rows

    def card_metrics(self, config: Any, result: dict[str, Any]) -> list[str]:
        """Validation and test metrics, MAE and RMSE headed with the label's unit."""
        from medtl.train.card import metrics_table

        return metrics_table(result, [(m, self.metric_spec(m).label) for m in REG_METRICS])

    def evaluate(
        self,
        loaded: Any,
        manifest: str | Path,
        *,
        out: Path | None = None,
        allow_seen: bool = False,
        device: str | None = None,
        grid: str = "native",
    ) -> dict[str, Any]:
        """The run's metrics on a labelled manifest (:func:`medtl.train.scoring.evaluate_rows`), with the unit."""
        from medtl.train.scoring import evaluate_rows

        result = evaluate_rows(loaded, manifest, out=out, allow_seen=allow_seen, device=device)
        return result | {"unit": self.unit}

    @classmethod
    def describe_evaluation(cls, result: dict[str, Any]) -> list[str]:
        lines = super().describe_evaluation(result)
        unit = result.get("unit")
        return [lines[0] + (f"  (mae and rmse in {unit})" if unit else ""), *lines[1:]]

    # ------------------------------------------------------------------ compare
    @classmethod
    def metric_unit(cls, config: Any) -> str:
        section = _section(config)
        unit = section.get("unit") if isinstance(section, Mapping) else getattr(section, "unit", "")
        return str(unit or "")

    @classmethod
    def patient_units(cls, run: Any, classes: list[str]) -> PatientRegression:
        rows = run.read_prediction_rows("test")
        source = run.predictions_file("test")
        needed = ("patient_id", "label", "pred")
        columns = list(rows[0]) if rows else list(needed)
        missing = [c for c in needed if c not in columns]
        if missing:
            raise RunDirError(
                f"{source}: not a regression predictions file (missing {', '.join(missing)}; "
                f"found {', '.join(columns)})",
                path=str(source),
                fix="compare reads the per-scan rows a regression run writes; train the run again",
            )
        try:
            target = [float(r["label"]) for r in rows]
            pred = [float(r["pred"]) for r in rows]
        except ValueError as exc:
            raise RunDirError(f"{source}: a label or pred is not a number ({exc})", path=str(source)) from None
        pids = [r.get("patient_id") or r.get("image") or "" for r in rows]
        return PatientRegression.from_scans(pids, pred, target)

    @classmethod
    def units_from_dict(cls, data: dict[str, Any]) -> PatientRegression:
        return PatientRegression.from_dict(data)

    @classmethod
    def describe_primary(cls, results: Any, summary: Any, same: str) -> str:
        unit = cls.metric_unit(results.config)
        name = results.classes[0] if results.classes else "the label"
        return (
            f"Primary metric: test {summary.spec.label}, computed over patients (each patient's predictions and labels "
            f"averaged over the patient's scans) {same}. Predicted: {name}" + (f", in {unit}." if unit else ".")
        )

    @classmethod
    def bootstrap_units(cls) -> str:
        return "patients (one pool, not stratified)"

    @classmethod
    def report_plots(cls, results: Any, plot_dir: Path) -> dict[str, tuple[str, Path]]:
        path = plot_predicted_vs_true(results, plot_dir / "predicted_vs_true.png", cls.metric_unit(results.config))
        return {"predicted_vs_true": ("Predicted vs true values", path)} if path is not None else {}

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        def constant(p: PatientRegression) -> bool:
            spread = float(np.std(p.target)) if len(p) else 0.0
            return len(p) > 1 and spread > 0 and float(np.ptp(p.pred)) < 1e-3 * spread

        flat = [r for r in runs if constant(r.predictions)]
        if not flat:
            return []
        return [
            f"{arm.display}: in {len(flat)} of {len(runs)} runs the model gave every test patient about the same "
            "value (its predictions vary by less than 0.1% of the targets' SD): it predicts the training mean, "
            "not the scans. Differences against this arm measure that failure, not the value of pretraining; "
            "train longer or with smaller batches."
        ]
