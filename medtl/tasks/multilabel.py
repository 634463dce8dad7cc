"""Multi-label findings: several findings per scan, each present or absent (``task: multilabel``).

**Manifest.** The generic columns (``image``, ``patient_id``, ``split``, ``series``) are read and checked as for every
task (:mod:`medtl.data.manifest`); the findings come in one of two forms:

* one column per finding (CheXpert's form): ``1`` present, ``0`` absent, ``-1`` uncertain, a blank cell unknown
  (``1.0``, ``0.0``, ``-1.0`` are read alike). The findings are ``multilabel.findings``, else every other column
  whose filled cells are all 0, 1 or -1;
* one ``labels`` column (``multilabel.labels_column``) naming the findings present, separated by ``|``
  (``Nodule|Effusion``): the findings it names are present, every other finding absent, and an **empty cell means
  no finding** (all absent). The findings are ``multilabel.findings``, else the sorted names found in the column;
  a name that is not among the given findings is an error naming its row.

Uncertain labels follow ``multilabel.uncertain``: ``ignore`` (the default) treats them like blank cells, ``zeros``
reads them as absent, ``ones`` as present. Unknown labels (blank, or uncertain and ignored) are masked out of the
loss and of every metric. A scan with no known finding adds 0 to the validation loss.

**Training.** One output per finding on a linear head; the loss is the binary cross-entropy with logits over the
known (scan, finding) entries, their mean, with optional positive weights (``multilabel.pos_weight``: ``balanced``
= each finding's negatives / positives among the training scans). Scores are sigmoid probabilities; the slices of
a 2.5D scan are averaged.

**Metrics** (scikit-learn on the known labels of each finding; a finding with one class among them has no AUROC
and no average precision, NaN, and is left out of the means):

* ``auroc``, ``average_precision``: per finding (``auroc_<finding>``, ``average_precision_<finding>``), then their
  mean over the findings (macro);
* ``f1``: per finding at its decision threshold (``f1_<finding>``; left out where the finding is neither present
  nor predicted), then the mean;
* ``auroc_micro``, ``average_precision_micro``: over every known (scan, finding) pair pooled.

A metric of the registry (:data:`medtl.metric_specs.METRICS`) named ``<base>_micro`` is the pooled form of the
scorer ``<base>``; every other one is the macro mean of its per-finding values.

**Thresholds.** ``multilabel.threshold: fixed`` uses ``threshold_value`` (0.5) for every finding; ``youden`` or
``f1`` choose each finding's threshold on the validation scans once training is done (the threshold maximising
sensitivity + specificity - 1, or F1; a finding with one class there keeps ``threshold_value``). They are recorded
in the run's ``preprocessing.json`` and ``result.json``, give the ``pred_<finding>`` columns and F1 (validation F1 is
then measured on the scans that chose the thresholds: optimistic; the test F1 is not).

**Splits.** By patient, stratified on the findings by iterative stratification (Sechidis et al. 2011;
:func:`medtl.data.splits.iterative_stratify`): each patient's label vector is the maximum over the patient's scans
(unknown counts as absent). A manifest's split column wins. Label fractions are prefixes of one seeded stratified
order of the training patients (:func:`~medtl.data.splits.iterative_order`), so they are nested.

**Predictions** (``predictions_<split>.csv``, ``medtl predict``): ``image, patient_id``, with labels one column per
finding holding the true value as the run scored it (1, 0, blank for unknown), then ``prob_<finding>`` and
``pred_<finding>`` (0/1 at the thresholds).

**Compare.** Each run's test predictions become :class:`PatientFindings`: one unit per patient (per patient and
label vector, when a patient's scans disagree), its scans' probabilities averaged. The bootstrap resamples patients,
jointly across findings, without strata; the report adds a per-finding AUROC table.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtl.data.dataset import SampleDataset
from medtl.errors import ConfigError, ManifestError, RunDirError, TrainingError
from medtl.metric_specs import default_metric, metric_spec, metrics_for_task
from medtl.tasks.base import Task

__all__ = [
    "MultiLabelTask",
    "PatientFindings",
    "FindingsDataset",
    "MaskedBCEWithLogits",
    "read_findings",
    "finding_metrics",
    "choose_thresholds",
    "aggregate_findings",
]

#: the multi-label metrics of the registry, in its order
ML_METRICS: tuple[str, ...] = metrics_for_task("multilabel")
#: how the registry names the pooled form of a scorer: ``<base>_micro``
MICRO = "_micro"
#: the manifest is read without a class column: a name no (stripped) header cell can have
_NO_LABEL_COLUMN = " "
#: columns of the predictions CSV besides the findings' own (evaluate adds ``split``)
_RESERVED = ("image", "patient_id", "split")


def _base(name: str) -> tuple[str, bool]:
    """``(scorer name, pooled?)`` of a registry metric: ``auroc_micro`` -> ``("auroc", True)``."""
    return (name[: -len(MICRO)], True) if name.endswith(MICRO) else (name, False)


#: the macro metrics: each has a per-finding form ``<metric>_<finding>``
MACRO_METRICS: tuple[str, ...] = tuple(m for m in ML_METRICS if not _base(m)[1])


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the finite values along ``axis``; NaN where there is none (no warning)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


# ------------------------------------------------------------------------------------------ manifest


def _check_names(findings: Sequence[str]) -> str | None:
    """What is wrong with a list of findings (names the predictions CSV and the metric keys cannot tell apart), or
    None."""
    names = list(findings)
    if not names:
        return "there are no findings"
    reserved = [f for f in names if f in _RESERVED]
    if reserved:
        return f"finding {reserved[0]!r} has the name of a column of the predictions file ({', '.join(_RESERVED)})"
    columns = [*_RESERVED, *names, *(f"prob_{f}" for f in names), *(f"pred_{f}" for f in names)]
    keys = [*ML_METRICS, *(f"{m}_{f}" for m in MACRO_METRICS for f in names)]
    for kind, items in (("columns of the predictions file", columns), ("metric names", keys)):
        twice = sorted({k for k in items if items.count(k) > 1})
        if twice:
            return f"the findings {names} give {kind} that clash ({', '.join(twice)})"
    return None


def _cell_value(text: str) -> float | None:
    """A finding cell as 1.0, 0.0, -1.0 or NaN (blank); None when it is none of these."""
    if not text:
        return math.nan
    try:
        v = float(text)
    except ValueError:
        return None
    return v if v in (1.0, 0.0, -1.0) else None


def read_findings(
    manifest: Any,
    *,
    findings: Sequence[str] | None = None,
    labels_column: str = "labels",
    separator: str = "|",
    uncertain: str = "ignore",
) -> tuple[list[str], list[list[float]]]:
    """The findings of a manifest and each record's target vector (1.0, 0.0, NaN for unknown).

    Args:
        manifest: a :class:`~medtl.data.Manifest` read without a class column (its other columns are the records'
            ``extra``).
        findings: the findings (their order is the output order); default: read from the manifest (module docstring).
        labels_column: the column of separated findings; used when the manifest has it (case ignored).
        separator: between the findings of a labels cell.
        uncertain: ``ignore`` (-1 -> NaN), ``zeros`` (-> 0) or ``ones`` (-> 1).

    Raises:
        ManifestError: no finding columns, a finding column missing, a cell that is not 1/0/-1/blank, a labels cell
            naming an unknown finding, or findings whose names clash; every problem with its CSV row.
    """
    path = manifest.path
    records = list(manifest)
    columns = list(records[0].extra) if records else []
    by_lower = {c.lower(): c for c in reversed(columns)}
    labels_col = by_lower.get(labels_column.lower())
    problems: list[str] = []
    fix = "fix these rows (row 1 is the header) and load it again"
    if labels_col is not None:
        cells = [[n.strip() for n in r.extra.get(labels_col, "").split(separator) if n.strip()] for r in records]
        if findings is None:
            findings = sorted({n for names in cells for n in names})
            if not findings:
                raise ManifestError(
                    f"manifest {path}: the {labels_col!r} column names no finding in any row (an empty cell means no "
                    "finding), so the findings are unknown",
                    path=str(path),
                    fix="list them in multilabel.findings",
                )
        known = set(findings)
        for r, names in zip(records, cells, strict=True):
            unknown = [n for n in names if n not in known]
            if unknown:
                close = difflib.get_close_matches(unknown[0], list(findings), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    f"row {r.row}: {labels_col!r} names {', '.join(map(repr, unknown))}{hint}, not one of the findings "
                    f"{', '.join(findings)}"
                )
        targets = [[1.0 if f in set(names) else 0.0 for f in findings] for names in cells]
    else:
        if findings is None:
            findings = [
                c
                for c in columns
                if any(r.extra.get(c) for r in records)
                and all(_cell_value(r.extra.get(c, "")) is not None for r in records)
            ]
            if not findings:
                raise ManifestError(
                    f"manifest {path} has no finding columns: neither a {labels_column!r} column nor a column whose "
                    "cells are all 1, 0, -1 or blank (columns besides image and patient: "
                    f"{', '.join(columns) or 'none'})",
                    path=str(path),
                    fix=f"add one 0/1 column per finding, or a {labels_column!r} column of '{separator}'-separated "
                    "findings (or set multilabel.labels_column)",
                )
        missing = [f for f in findings if f not in columns]
        if missing:
            hints = [difflib.get_close_matches(f, columns, n=1) for f in missing]
            shown = ", ".join(
                f"{f!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for f, h in zip(missing, hints, strict=True)
            )
            raise ManifestError(
                f"manifest {path} has no column for finding(s) {shown} and no {labels_column!r} column "
                f"(columns besides image and patient: {', '.join(columns) or 'none'})",
                path=str(path),
                fix="add the columns, or list the manifest's own in multilabel.findings",
            )
        policy = {"ignore": math.nan, "zeros": 0.0, "ones": 1.0}[uncertain]
        targets = []
        for r in records:
            row = []
            for f in findings:
                v = _cell_value(r.extra.get(f, ""))
                if v is None:
                    problems.append(
                        f"row {r.row}: column {f!r} holds {r.extra.get(f)!r}; a finding is 1 (present), 0 (absent), "
                        "-1 (uncertain) or blank (unknown)"
                    )
                    v = math.nan
                row.append(policy if v == -1.0 else v)
            targets.append(row)
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ManifestError(
            f"manifest {path} has {len(problems)} problem(s): " + "; ".join(problems[:8]) + more,
            path=str(path),
            fix=fix,
        )
    clash = _check_names(findings)
    if clash:
        raise ManifestError(f"manifest {path}: {clash}", path=str(path), fix="rename the findings")
    return list(findings), targets


def _patient_matrix(records: Sequence[dict[str, Any]], n_findings: int) -> tuple[list[str], np.ndarray]:
    """Sorted patients and their label vectors for stratification: a finding is present in a patient when one of
    the patient's scans has it (unknown counts as absent)."""
    patients = sorted({str(r["patient_id"]) for r in records})
    index = {p: i for i, p in enumerate(patients)}
    y = np.zeros((len(patients), n_findings), dtype=bool)
    for r in records:
        t = r.get("targets")
        if t is not None:
            y[index[str(r["patient_id"])]] |= np.asarray(t, dtype=float) == 1.0
    return patients, y


# ------------------------------------------------------------------------------------------ metrics


class _Scores:
    """How each scorer of the registry's multi-label metrics scores one finding (or the pooled pairs of its
    ``_micro`` form): a static method named after it, taking the known labels, the scores and the thresholds."""

    @staticmethod
    def auroc(y: np.ndarray, s: np.ndarray, thr: np.ndarray) -> float:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else math.nan

    @staticmethod
    def average_precision(y: np.ndarray, s: np.ndarray, thr: np.ndarray) -> float:
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(y, s)) if 0 < y.sum() < y.size else math.nan

    @staticmethod
    def f1(y: np.ndarray, s: np.ndarray, thr: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        pred = s >= thr
        if not (pred.any() or y.any()):
            return math.nan  # neither present nor predicted: left out, as classification leaves out such a class
        return float(f1_score(y.astype(int), pred.astype(int), zero_division=0.0))


class _WeightedScores:
    """The scorers of :class:`_Scores` on many resamples at once: ``weights`` (B, n) counts each unit per resample
    (0: not drawn, or its label unknown); equal to :class:`_Scores` on the resample with each unit repeated."""

    @staticmethod
    def auroc(pos: np.ndarray, s: np.ndarray, thr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        from medtl.comparison.patients import _weighted_auc

        return _weighted_auc(pos, s, weights)

    @staticmethod
    def average_precision(pos: np.ndarray, s: np.ndarray, thr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # scikit-learn's step sum: over the distinct scores from the highest, recall gained times precision there
        order = np.argsort(-s, kind="mergesort")
        ss = s[order]
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
        w = weights[:, order]
        p = pos[order]
        tp_g = np.add.reduceat(w * p, starts, axis=1)
        fp_g = np.add.reduceat(w * ~p, starts, axis=1)
        tp, fp = np.cumsum(tp_g, axis=1), np.cumsum(fp_g, axis=1)
        n_pos, n_neg = tp[:, -1], fp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            ap = (tp_g * precision).sum(axis=1) / n_pos
        return np.where((n_pos > 0) & (n_neg > 0), ap, np.nan)

    @staticmethod
    def f1(pos: np.ndarray, s: np.ndarray, thr: np.ndarray, weights: np.ndarray) -> np.ndarray:
        pred = s >= thr
        tp = weights @ (pred & pos).astype(float)
        fp = weights @ (pred & ~pos).astype(float)
        fn = weights @ (~pred & pos).astype(float)
        den = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * tp / den, np.nan)


def _arrays(probs: Any, labels: Any, n_findings: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().double().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().double().numpy()
    p = np.asarray(probs, dtype=float).reshape(-1, n_findings)
    y = np.asarray(labels, dtype=float).reshape(-1, n_findings)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} rows of probabilities but {y.shape[0]} rows of labels")
    if p.size and not np.isfinite(p).all():
        bad = int((~np.isfinite(p).all(axis=1)).sum())
        raise TrainingError(
            f"{bad} of {p.shape[0]} predictions hold NaN or infinite probabilities, so no metric can be computed",
            fix="the model's outputs are broken (a non-finite loss or non-finite weights); check the training log",
        )
    return p, y


def finding_metrics(probs: Any, labels: Any, thresholds: Sequence[float], findings: Sequence[str]) -> dict[str, Any]:
    """The multi-label metrics of per-scan (or per-patient) probabilities (module docstring: definitions).

    Args:
        probs: ``(n, F)`` probabilities (array or tensor).
        labels: ``(n, F)`` true values: 1, 0, NaN for unknown.
        thresholds: one decision threshold per finding (F1).
        findings: the findings' names (the per-finding keys).

    Returns:
        ``n``, every metric of the registry for the task, and ``<metric>_<finding>`` for the macro ones.
    """
    f = len(findings)
    p, y = _arrays(probs, labels, f)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=float), p.shape)
    known = np.isfinite(y)
    out: dict[str, Any] = {"n": int(p.shape[0])}
    for name in ML_METRICS:
        base, pooled = _base(name)
        score = getattr(_Scores, base)
        if pooled:
            out[name] = score(y[known] == 1, p[known], thr[known])
            continue
        values = np.array([score(y[known[:, j], j] == 1, p[known[:, j], j], thr[known[:, j], j]) for j in range(f)])
        out[name] = float(_nanmean(values))
        out |= {f"{name}_{finding}": float(v) for finding, v in zip(findings, values, strict=True)}
    return out


def choose_thresholds(
    probs: Any, labels: Any, rule: str, default: float, n_findings: int
) -> tuple[list[float], list[int]]:
    """Each finding's decision threshold chosen on labelled scans.

    Args:
        probs, labels: ``(n, F)`` probabilities and true values (NaN unknown).
        rule: ``youden`` (the threshold of the ROC curve maximising sensitivity + specificity - 1) or ``f1`` (of
            the precision-recall curve maximising F1); a prediction is positive when its probability is at least
            the threshold.
        default: the threshold of a finding with one class among the scans.
        n_findings: F.

    Returns:
        The thresholds, and the indices of the findings that kept ``default``.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    p, y = _arrays(probs, labels, n_findings)
    out, kept = [], []
    for j in range(n_findings):
        known = np.isfinite(y[:, j])
        yj, sj = y[known, j] == 1, p[known, j]
        if not 0 < yj.sum() < yj.size:
            out.append(float(default))
            kept.append(j)
            continue
        if rule == "youden":
            fpr, tpr, thr = roc_curve(yj, sj)
            ok = np.isfinite(thr)
            best = float(thr[ok][np.argmax((tpr - fpr)[ok])])
        else:
            precision, recall, thr = precision_recall_curve(yj, sj)
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)[:-1]
            best = float(thr[np.argmax(f1)])
        out.append(min(max(best, 0.0), 1.0))
    return out, kept


# ------------------------------------------------------------------------------------------ training


class MaskedBCEWithLogits(nn.Module):
    """Binary cross-entropy with logits over the known entries of a ``(B, F)`` target (NaN: unknown), their mean.

    Args:
        pos_weight: weights of the positive terms, one per finding (None: 1). Kept out of the module's state dict:
            the task's state records them, and a checkpoint loads whatever the weights were.
    """

    def __init__(self, pos_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        weight = None if pos_weight is None else torch.as_tensor(list(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", weight, persistent=False)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-entry losses with unknown entries 0, known mask)``."""
        targets = targets.to(logits.device, torch.float32)
        known = torch.isfinite(targets)
        safe = torch.where(known, targets, torch.zeros_like(targets))
        weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits.float(), safe, reduction="none", pos_weight=weight
        )
        return losses * known, known

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses, known = self.elementwise(logits, targets)
        return losses.sum() / known.sum().clamp(min=1)


class FindingsDataset(SampleDataset):
    """A :class:`~medtl.data.dataset.SampleDataset` whose samples also hold ``targets``: the scan's ``(F,)`` float
    target vector (NaN for unknown; all NaN for a record without targets, such as a scan given to predict)."""

    def __init__(self, records: Sequence[dict[str, Any]], *args: Any, n_findings: int, **kwargs: Any) -> None:
        super().__init__(records, *args, **kwargs)
        rows = [r.get("targets") if r.get("targets") is not None else [math.nan] * n_findings for r in self.records]
        self.targets = torch.as_tensor(np.asarray(rows, dtype=np.float32).reshape(-1, n_findings))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        out = super().__getitem__(idx)
        out["targets"] = self.targets[self.index[idx][0]]
        return out


# ------------------------------------------------------------------------------------------ the task


@dataclass
class MultiLabelTask(Task):
    """Several findings per scan, each present or absent (see the module docstring).

    Args:
        classes: the findings, in output order.
        thresholds: one decision threshold per finding (default: ``threshold_value`` for each).
        threshold_rule: ``fixed``, ``youden`` or ``f1`` (when and how the thresholds are chosen).
        threshold_value: the fixed threshold, and the one a finding keeps when it cannot be chosen.
        pos_weight: positive-term weights of the loss, one per finding (None: 1).
        uncertain: the policy for -1 labels (``ignore``, ``zeros``, ``ones``).
        labels_column, separator: the manifest's column of separated findings.
    """

    classes: list[str]
    thresholds: list[float] = field(default_factory=list)
    threshold_rule: str = "fixed"
    threshold_value: float = 0.5
    pos_weight: list[float] | None = None
    uncertain: str = "ignore"
    labels_column: str = "labels"
    separator: str = "|"
    #: findings that kept ``threshold_value`` when the thresholds were chosen (one class among the validation scans)
    thresholds_kept: list[str] = field(default_factory=list)
    name = "multilabel"

    def __post_init__(self) -> None:
        clash = _check_names(self.classes)
        if clash:
            raise ConfigError(clash, fix="rename the findings (multilabel.findings, or the manifest's columns)")
        if not self.thresholds:
            self.thresholds = [float(self.threshold_value)] * len(self.classes)
        if self.pos_weight is not None and len(self.pos_weight) != len(self.classes):
            raise ConfigError(
                f"multilabel.pos_weight has {len(self.pos_weight)} weights but there are {len(self.classes)} findings "
                f"({', '.join(self.classes)})",
                fix="give one weight per finding, in the findings' order, or use pos_weight: balanced",
            )

    # ------------------------------------------------------------------ config and manifest
    @classmethod
    def _section(cls, config: Any) -> Any:
        from medtl.config.sections import MultiLabelConfig

        return getattr(config, "multilabel", None) or MultiLabelConfig()

    @classmethod
    def _read(cls, config: Any, manifest: Any, findings: Sequence[str] | None = None) -> tuple[list[str], list]:
        section = cls._section(config)
        return read_findings(
            manifest,
            findings=findings if findings is not None else section.findings,
            labels_column=section.labels_column,
            separator=section.separator,
            uncertain=section.uncertain,
        )

    @classmethod
    def read_manifest(cls, config: Any, *, check_files: bool = True) -> Any:
        """The manifest with its generic columns checked as for every task, and its findings read (errors name the
        rows)."""
        from medtl.data import Manifest

        manifest = Manifest.from_csv(
            config.data.manifest,
            check_files=check_files,
            labels_required=False,
            label_column=_NO_LABEL_COLUMN,
            image_column=config.data.image_column,
            patient_column=config.data.patient_column,
        )
        if len(manifest):
            cls._read(config, manifest)
        return manifest

    @classmethod
    def records(cls, config: Any, manifest: Any) -> list[dict[str, Any]]:
        """The rows with ``targets`` (the target vector, NaN for unknown) and ``label_name`` (the findings present)."""
        findings, targets = cls._read(config, manifest)
        return _attach(manifest.to_dicts(), findings, targets)

    @classmethod
    def output_names(cls, config: Any, manifest: Any) -> list[str]:
        return cls._read(config, manifest)[0]

    @classmethod
    def patient_strata(cls, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        """How many findings each patient has (the splits themselves stratify on the findings: :meth:`make_splits`)."""
        n = max((len(r.get("targets") or ()) for r in records), default=0)
        patients, y = _patient_matrix(records, n)
        return {p: int(v) for p, v in zip(patients, y.sum(axis=1), strict=True)}

    @classmethod
    def make_splits(cls, records: Sequence[dict[str, Any]], splits: Any) -> dict[str, str]:
        """A manifest's split column, else iterative stratification of the patients on their findings (test, val,
        train; with ``splits.folds``, the test patients first, then the others dealt into stratified folds)."""
        from medtl.data.splits import iterative_stratify, make_splits

        records = list(records)
        if not records or any(r.get("split") not in (None, "") for r in records):
            return make_splits(records, seed=splits.seed)  # the split column wins (or: no rows, an error)
        n = max(len(r.get("targets") or ()) for r in records)
        patients, y = _patient_matrix(records, n)
        test, val = splits.test_fraction, splits.val_fraction
        if splits.folds is None:
            part = iterative_stratify(y, [test, val, 1.0 - test - val], seed=splits.seed)
            return {p: ("test", "val", "train")[k] for p, k in zip(patients, part.tolist(), strict=True)}
        held = iterative_stratify(y, [test, 1.0 - test], seed=splits.seed)
        out = {p: "test" for p, k in zip(patients, held.tolist(), strict=True) if k == 0}
        rest = np.flatnonzero(held == 1)
        folds = iterative_stratify(y[rest], [1.0 / splits.folds] * splits.folds, seed=splits.seed)
        for i, k in zip(rest.tolist(), folds.tolist(), strict=True):
            out[patients[i]] = "val" if k == splits.fold else "train"
        return out

    @classmethod
    def fraction_patients(
        cls, train_patients: Sequence[str], records: Sequence[dict[str, Any]], fraction: float, seed: int
    ) -> list[str]:
        """The first ``ceil(fraction * n)`` training patients (at least one) of one seeded order whose prefixes are
        stratified on the findings: nested across fractions."""
        from medtl.data.splits import iterative_order

        if fraction >= 1.0:
            return list(train_patients)
        wanted = set(map(str, train_patients))
        mine = [r for r in records if str(r["patient_id"]) in wanted]
        n = max((len(r.get("targets") or ()) for r in mine), default=0)
        patients, y = _patient_matrix(mine, n)
        order = iterative_order(y, seed=seed)
        k = max(1, math.ceil(fraction * len(patients) - 1e-9))
        return sorted(patients[i] for i in order[:k])

    @classmethod
    def split_label_text(cls, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Each patient's findings (present in one of the patient's scans), ``|``-separated; ``none`` without."""
        found: dict[str, set[str]] = {}
        for r in records:
            names = found.setdefault(str(r["patient_id"]), set())
            names.update(n for n in str(r.get("label_name") or "").split("|") if n and n != _NONE)
        return {p: "|".join(sorted(n)) or _NONE for p, n in found.items()}

    # ------------------------------------------------------------------ the task of an experiment
    @classmethod
    def _of(cls, config: Any, findings: list[str], **state: Any) -> MultiLabelTask:
        section = cls._section(config)
        return cls(
            list(findings),
            threshold_rule=section.threshold,
            threshold_value=section.threshold_value,
            pos_weight=list(section.pos_weight) if isinstance(section.pos_weight, list) else None,
            uncertain=section.uncertain,
            labels_column=section.labels_column,
            separator=section.separator,
            **state,
        )

    @classmethod
    def from_experiment(cls, config: Any, manifest: Any, pipeline: Any) -> MultiLabelTask:
        return cls._of(config, cls.output_names(config, manifest))

    @classmethod
    def from_state(cls, config: Any, state: dict[str, Any], pipeline: Any) -> MultiLabelTask:
        task = cls._of(config, list(state["classes"]), thresholds=[float(t) for t in state.get("thresholds") or []])
        if state.get("pos_weight") is not None:
            task.pos_weight = [float(w) for w in state["pos_weight"]]
        return task

    def state(self) -> dict[str, Any]:
        return super().state() | {
            "thresholds": [float(t) for t in self.thresholds],
            "threshold_rule": self.threshold_rule,
            "pos_weight": self.pos_weight,
            "uncertain": self.uncertain,
        }

    def check_training_split(self, records: Sequence[dict[str, Any]], assignment: dict[str, str], where: str) -> None:
        """Refuse findings with no positive or no negative training patient (a patient is negative for a finding
        when a scan of it is known absent and none present)."""
        train = [r for r in records if assignment.get(str(r["patient_id"])) == "train"]
        patients, pos = _patient_matrix(train, len(self.classes))
        index = {p: i for i, p in enumerate(patients)}
        absent = np.zeros_like(pos)
        for r in train:
            t = r.get("targets")
            if t is not None:
                absent[index[str(r["patient_id"])]] |= np.asarray(t, dtype=float) == 0.0
        neg = absent & ~pos
        bad = [
            f"{f} ({int(pos[:, j].sum())} positive, {int(neg[:, j].sum())} negative)"
            for j, f in enumerate(self.classes)
            if not (pos[:, j].any() and neg[:, j].any())
        ]
        if bad:
            raise TrainingError(
                f"finding(s) {'; '.join(bad)} lack positive or negative training patients in {where} "
                f"({len(patients)} training patients); the network cannot learn them",
                fix="add scans with and without these findings, lower splits.val_fraction/test_fraction, or leave "
                "the findings out of multilabel.findings",
            )

    def describe_labels(self, records: Sequence[dict[str, Any]]) -> str:
        """Per finding, the scans where it is present, absent and unknown."""
        t = np.asarray([r.get("targets") or [math.nan] * len(self.classes) for r in records], dtype=float)
        t = t.reshape(-1, len(self.classes))
        return "; ".join(
            f"{f}: {int((t[:, j] == 1).sum())} present, {int((t[:, j] == 0).sum())} absent"
            + (f", {int(np.isnan(t[:, j]).sum())} unknown" if np.isnan(t[:, j]).any() else "")
            for j, f in enumerate(self.classes)
        )

    def fit(self, experiment: Any) -> None:
        """``multilabel.pos_weight: balanced``: each finding's negatives / positives among the training scans (1 for
        a finding without positives or negatives)."""
        section = self._section(experiment.config)
        if section.pos_weight != "balanced":
            return
        t = np.asarray([r["targets"] for r in experiment.splits["train"]], dtype=float).reshape(-1, len(self.classes))
        pos, neg = (t == 1).sum(axis=0), (t == 0).sum(axis=0)
        self.pos_weight = [float(n / p) if p and n else 1.0 for p, n in zip(pos, neg, strict=True)]

    def dataset(self, records: list[dict[str, Any]], pipeline: Any, **options: Any):
        return FindingsDataset(records, pipeline, n_findings=len(self.classes), **options)

    def read_labelled(self, path: Path) -> list[dict[str, Any]]:
        """A labelled manifest given to the finished run: the run's findings, each a column (or named in the labels
        column), with the run's uncertain policy."""
        from medtl.data import Manifest

        manifest = Manifest.from_csv(path, labels_required=False, label_column=_NO_LABEL_COLUMN)
        if not len(manifest):
            return []
        findings, targets = read_findings(
            manifest,
            findings=self.classes,
            labels_column=self.labels_column,
            separator=self.separator,
            uncertain=self.uncertain,
        )
        return _attach(manifest.to_dicts(), findings, targets)

    # ------------------------------------------------------------------ network
    def make_loss(self) -> nn.Module:
        return MaskedBCEWithLogits(self.pos_weight)

    def target(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["targets"].float()

    def sample_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per sample, the unweighted binary cross-entropy averaged over its known findings (0 with none known)."""
        losses, known = MaskedBCEWithLogits().elementwise(outputs, targets)
        return losses.sum(dim=1) / known.sum(dim=1).clamp(min=1)

    def outputs_to_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().sigmoid()

    def per_scan(
        self, scores: torch.Tensor, targets: torch.Tensor, scans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row per scan, sorted by scan: the probabilities of its samples averaged, its target vector kept."""
        f = len(self.classes)
        scores, targets = scores.reshape(-1, f), targets.reshape(-1, f)
        ids, inverse = torch.unique(scans.long(), sorted=True, return_inverse=True)
        sums = torch.zeros(ids.numel(), f, dtype=torch.float64).index_add_(0, inverse, scores.double())
        counts = torch.bincount(inverse, minlength=ids.numel()).double()
        out_targets = torch.full((ids.numel(), f), math.nan)
        out_targets[inverse] = targets.float()
        return (sums / counts[:, None]).float(), out_targets, ids

    def metrics(self, scores: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return finding_metrics(scores, targets, self.thresholds, self.classes)

    def monitor_value(self, metrics: dict[str, Any], key: str) -> float:
        """The logged value; a macro metric undefined for every finding falls back on its pooled form (defined when
        the pooled pairs hold both classes)."""
        value = float(metrics[key])
        if math.isnan(value) and f"{key}{MICRO}" in metrics:
            value = float(metrics[f"{key}{MICRO}"])
        return value

    def learn_from_validation(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """``multilabel.threshold: youden`` or ``f1``: each finding's threshold chosen on the validation scans."""
        if self.threshold_rule == "fixed":
            return
        self.thresholds, kept = choose_thresholds(
            scores, targets, self.threshold_rule, self.threshold_value, len(self.classes)
        )
        self.thresholds_kept = [self.classes[j] for j in kept]

    # ------------------------------------------------------------------ a finished run
    def result_extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "thresholds": dict(zip(self.classes, map(float, self.thresholds), strict=True)),
            "threshold_rule": self.threshold_rule,
            "uncertain": self.uncertain,
        }
        if self.thresholds_kept:
            out["thresholds_not_chosen"] = list(self.thresholds_kept)
        if self.pos_weight is not None:
            out["pos_weight"] = dict(zip(self.classes, self.pos_weight, strict=True))
        return out

    def prediction_columns(self, *, with_labels: bool) -> list[str]:
        return (
            ["image", "patient_id"]
            + (list(self.classes) if with_labels else [])
            + [f"prob_{f}" for f in self.classes]
            + [f"pred_{f}" for f in self.classes]
        )

    def prediction_rows(
        self, records: Sequence[dict[str, Any]], scores: torch.Tensor, scan_ids: torch.Tensor, *, with_labels: bool
    ) -> list[dict[str, Any]]:
        rows = []
        for probs, sid in zip(scores.tolist(), scan_ids.tolist(), strict=True):
            r = records[sid]
            row: dict[str, Any] = {"image": str(r["image"]), "patient_id": r.get("patient_id", "")}
            if with_labels:
                truth = r.get("targets") or [math.nan] * len(self.classes)
                row |= {f: ("" if math.isnan(v) else int(v)) for f, v in zip(self.classes, truth, strict=True)}
            row |= {f"prob_{f}": float(p) for f, p in zip(self.classes, probs, strict=True)}
            row |= {f"pred_{f}": int(p >= t) for f, p, t in zip(self.classes, probs, self.thresholds, strict=True)}
            rows.append(row)
        return rows

    def card_metrics(self, config: Any, result: dict[str, Any]) -> list[str]:
        """The summary table, then one row per split and finding."""
        from medtl.train.card import fmt_metric, md_escape

        lines = super().card_metrics(config, result)
        rule = {
            "fixed": f"{self.threshold_value:g} for every finding",
            "youden": "chosen per finding on the validation scans (Youden's J)",
            "f1": "chosen per finding on the validation scans (best F1)",
        }[self.threshold_rule]
        words = [metric_spec(m).words for m in MACRO_METRICS]
        lines += [
            "",
            f"Per finding (known labels only; uncertain labels: {self.uncertain}); F1 at the decision thresholds, "
            f"{rule}: "
            + ", ".join(f"{md_escape(f)} {t:.3f}" for f, t in zip(self.classes, self.thresholds, strict=True))
            + ".",
            "",
            "| split | finding | " + " | ".join(words) + " |",
            "|---|---|" + "---|" * len(words),
        ]
        for split in ("val", "test"):
            m = result["metrics"].get(split) or {}
            if not m:
                continue
            for f in self.classes:
                cells = " | ".join(fmt_metric(m.get(f"{k}_{f}")) for k in MACRO_METRICS)
                lines.append(f"| {split} | {md_escape(f)} | {cells} |")
        return lines

    @classmethod
    def describe_evaluation(cls, result: dict[str, Any]) -> list[str]:
        """The base line, each finding's metrics, then the patients the run saw."""
        lines = super().describe_evaluation(result)
        per_finding = []
        for f in result.get("classes") or []:
            values = {m: result.get(f"{m}_{f}") for m in MACRO_METRICS}
            parts = [f"{m} {v:.4f}" for m, v in values.items() if isinstance(v, float) and math.isfinite(v)]
            per_finding.append(f"  {f}: {'  '.join(parts) or 'n/a (one class among the scans)'}")
        return lines[:1] + per_finding + lines[1:]

    # ------------------------------------------------------------------ compare
    @classmethod
    def patient_units(cls, run: Any, classes: list[str]) -> PatientFindings:
        path = run.predictions_file("test")
        # the run's thresholds (F1 of the units); a folder holding only predictions scores at threshold_value's 0.5
        has_state = run.file(type(run).PREPROCESSING).is_file()
        thresholds = run.read_preprocessing().get("thresholds") if has_state else None
        return aggregate_findings(run.read_prediction_rows("test"), classes, thresholds, source=str(path))

    @classmethod
    def units_from_dict(cls, data: dict[str, Any]) -> PatientFindings:
        return PatientFindings.from_dict(data)

    @classmethod
    def describe_primary(cls, results: Any, summary: Any, same: str) -> str:
        spec = summary.spec
        base, pooled = _base(spec.name)
        how = (
            f"{metric_spec(base).words} over every known (patient, finding) pair pooled"
            if pooled
            else f"for each finding, {spec.words} over the test patients whose label for it is known, then the mean "
            f"over the findings where it is defined (macro)"
        )
        return (
            f"Multi-label findings. Primary metric: test {spec.words}: {how}; each patient's scan probabilities "
            f"averaged, {same}. Findings: {', '.join(results.classes)}."
        )

    @classmethod
    def bootstrap_units(cls) -> str:
        return "patients, jointly across findings (a drawn patient brings all its labels), without strata"

    @classmethod
    def report_blocks(cls, results: Any, summary: Any, out: Path) -> list[Any]:
        """A per-finding table: each finding's test patients and its AUROC per arm at the largest label fraction."""
        from medtl.comparison.render import Block
        from medtl.comparison.tables import ci_text, fmt

        findings = list(results.classes)
        f = max(results.fractions)
        units = next((r.predictions for r in results.runs if r.ok and r.predictions is not None), None)
        per_metric = _base(default_metric(cls.name))[0]
        spec = metric_spec(per_metric)
        b: list[Any] = [Block("h2", f"{spec.words} per finding")]
        b.append(
            Block(
                "p",
                f"Test {spec.words} of each finding over the test patients whose label for it is known, mean over "
                f"seeds (95% CI over seeds), with {f * 100:g}% of the labels. A finding with one class among the test "
                f"patients has no {spec.words} (n/a) and is left out of the macro mean.",
            )
        )
        arms = [a for a in results.arms if summary.row(a.name, f) is not None]
        rows = []
        for j, finding in enumerate(findings):
            counts = units.counts(j) if units is not None else None
            cells = [finding, "" if counts is None else f"{counts[0]} / {counts[1]} / {counts[2]}"]
            for a in arms:
                ci = summary.row(a.name, f).metrics.get(f"{per_metric}_{finding}")
                cells.append(
                    "n/a" if ci is None else f"{fmt(ci.mean, spec.digits)} ({ci_text(ci.low, ci.high, spec.digits)})"
                )
            rows.append(cells)
        header = ["finding", "test patients (present / absent / unknown)", *(a.display for a in arms)]
        b.append(Block("table", header=header, rows=rows))
        return b

    @classmethod
    def run_warnings(cls, results: Any, arm: Any, runs: list[Any]) -> list[str]:
        return cls.constant_probability_warning(arm, runs, "probabilities for every finding")


_NONE = "none"


def _attach(records: list[dict[str, Any]], findings: list[str], targets: list[list[float]]) -> list[dict[str, Any]]:
    for r, t in zip(records, targets, strict=True):
        r["targets"] = [float(v) for v in t]
        r["label"] = 0  # generic code groups records by label: one group (the splits stratify on the targets)
        r["label_name"] = "|".join(f for f, v in zip(findings, t, strict=True) if v == 1.0) or _NONE
    return records


# ------------------------------------------------------------------------------------------ compare units


@dataclass
class PatientFindings:
    """A run's test predictions, one unit per patient, for the comparison's statistics
    (:class:`~medtl.comparison.stats.PatientData`).

    A patient's scans are averaged into one unit; scans of one patient whose label vectors differ (a finding present
    in one study, absent in another) form one unit per label vector, tied by ``patient_id`` so the bootstrap draws
    the patient whole (as :class:`~medtl.comparison.patients.PatientPredictions` does for classes).

    Attributes:
        patient_id: one entry per unit (hashed IDs).
        findings: the findings.
        probs: ``(U, F)`` mean probabilities.
        labels: ``(U, F)`` true values, 1, 0, NaN for unknown.
        n_images: scans averaged into each unit.
        thresholds: ``(F,)`` the run's decision thresholds (F1).
    """

    patient_id: np.ndarray
    findings: list[str]
    probs: np.ndarray
    labels: np.ndarray
    n_images: np.ndarray
    thresholds: np.ndarray
    _cache: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.patient_id.size)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*ML_METRICS, *(f"{m}_{f}" for m in MACRO_METRICS for f in self.findings))

    @property
    def strata(self) -> None:
        """No strata: patients are drawn from one pool, jointly across findings (one class per finding does not
        partition the patients, and label combinations would be strata of one)."""
        return None

    def metric(self, name: str) -> float:
        """``name`` over the units, computed by :func:`finding_metrics` (scikit-learn)."""
        if self._cache is None:
            self._cache = finding_metrics(self.probs, self.labels, self.thresholds, self.findings)
        return float(self._cache[name])

    def weighted(self, name: str, counts: np.ndarray) -> np.ndarray:
        """``name`` on many resamples at once, one row of unit counts each; equal to :meth:`metric` on each resample
        with the units repeated by their counts (patients bring all their labels; unknown labels weigh 0)."""
        w = np.atleast_2d(np.asarray(counts, dtype=float))
        known = np.isfinite(self.labels)
        pos = self.labels == 1.0
        if name in ML_METRICS:
            base, pooled = _base(name)
        else:
            base, j = self._per_finding(name)
            return self._finding(base, j, w, known, pos)
        score = getattr(_WeightedScores, base)
        if pooled:
            wf = (w[:, :, None] * known[None]).reshape(w.shape[0], -1)
            thr = np.broadcast_to(self.thresholds, self.probs.shape).reshape(-1)
            return score(pos.reshape(-1), self.probs.reshape(-1), thr, wf)
        per = np.stack([self._finding(base, j, w, known, pos) for j in range(len(self.findings))], axis=1)
        return _nanmean(per, axis=1)

    def _finding(self, base: str, j: int, w: np.ndarray, known: np.ndarray, pos: np.ndarray) -> np.ndarray:
        score = getattr(_WeightedScores, base)
        thr = np.full(len(self), float(self.thresholds[j]))
        return score(pos[:, j], self.probs[:, j], thr, w * known[:, j])

    def _per_finding(self, name: str) -> tuple[str, int]:
        for m in sorted(MACRO_METRICS, key=len, reverse=True):
            finding = name[len(m) + 1 :]
            if name.startswith(m + "_") and finding in self.findings:
                return m, self.findings.index(finding)
        raise KeyError(f"{name!r} is not a metric of these findings ({', '.join(self.metric_names)})")

    def counts(self, j: int) -> tuple[int, int, int]:
        """Patients for whom finding ``j`` is present (in a unit), absent (known, never present), unknown."""
        present, absent = set(), set()
        for p, v in zip(self.patient_id.tolist(), self.labels[:, j].tolist(), strict=True):
            if v == 1.0:
                present.add(p)
            elif v == 0.0:
                absent.add(p)
        absent -= present
        n = len(set(self.patient_id.tolist()))
        return len(present), len(absent), n - len(present) - len(absent)

    def n_left_out(self, name: str) -> int:
        """Units left out of ``name``: none (unknown labels are left out entry by entry, not patient by patient)."""
        return 0

    def delong_scores(self, name: str) -> None:
        """DeLong's test is about one two-class AUROC; a mean over findings is not one."""
        return None

    def _keys(self) -> list[tuple[str, tuple[float | None, ...]]]:
        return [
            (str(p), tuple(None if math.isnan(v) else float(v) for v in row))
            for p, row in zip(self.patient_id.tolist(), self.labels.tolist(), strict=True)
        ]

    def same_units(self, other: PatientFindings) -> bool:
        return self.findings == other.findings and self._keys() == other._keys()

    def align(self, other: PatientFindings) -> tuple[PatientFindings, PatientFindings]:
        """Both restricted to their common (patient, label vector) units, in the same order."""
        if self.findings != other.findings:
            raise ValueError(f"the runs predict different findings ({self.findings} and {other.findings})")
        from medtl.bootstrap import common_units

        ia, ib = common_units(self._keys(), other._keys(), order=repr)
        return self._take(ia), other._take(ib)

    def _take(self, idx: np.ndarray) -> PatientFindings:
        return PatientFindings(
            self.patient_id[idx],
            list(self.findings),
            self.probs[idx],
            self.labels[idx],
            self.n_images[idx],
            self.thresholds,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": MultiLabelTask.name,
            "patient_id": [str(p) for p in self.patient_id],
            "findings": list(self.findings),
            "probs": [[float(v) for v in row] for row in self.probs],
            "labels": [[None if math.isnan(v) else float(v) for v in row] for row in self.labels],
            "n_images": [int(n) for n in self.n_images],
            "thresholds": [float(t) for t in self.thresholds],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatientFindings:
        f = len(d["findings"])
        labels = [[math.nan if v is None else float(v) for v in row] for row in d["labels"]]
        return cls(
            np.asarray([str(p) for p in d["patient_id"]], dtype=object),
            list(d["findings"]),
            np.asarray(d["probs"], dtype=float).reshape(-1, f),
            np.asarray(labels, dtype=float).reshape(-1, f),
            np.asarray(d.get("n_images") or [1] * len(d["patient_id"]), dtype=int),
            np.asarray(d.get("thresholds") or [0.5] * f, dtype=float),
        )


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def aggregate_findings(
    rows: Sequence[dict[str, str]],
    findings: Sequence[str],
    thresholds: Sequence[float] | None = None,
    *,
    source: str = "predictions_test.csv",
) -> PatientFindings:
    """Per-patient units from the per-scan rows of a multi-label run's predictions CSV.

    Args:
        rows: the rows as :meth:`medtl.rundir.RunDir.read_prediction_rows` returns them.
        findings: the run's findings.
        thresholds: its decision thresholds (default 0.5 each).
        source: the file, for error messages.

    Raises:
        RunDirError: the rows lack ``patient_id``, a finding's true-value column or its ``prob_`` column.
    """
    findings = list(findings)
    columns = list(rows[0]) if rows else []
    needed = ["patient_id", *findings, *(f"prob_{f}" for f in findings)]
    missing = [c for c in needed if c not in columns]
    if rows and missing:
        raise RunDirError(
            f"{source}: not the predictions of a multi-label run with findings {', '.join(findings)} (missing "
            f"{', '.join(missing)}; found {', '.join(columns)})",
            path=source,
            fix="compare reads the per-scan rows a multi-label run writes; train the run again",
        )
    units: dict[tuple[str, tuple[float | None, ...]], list[int]] = {}
    probs = np.asarray([[_float(r[f"prob_{f}"]) for f in findings] for r in rows], dtype=float)
    probs = probs.reshape(-1, len(findings))
    for i, r in enumerate(rows):
        truth = tuple(None if math.isnan(v) else v for v in (_float(r[f]) for f in findings))
        units.setdefault((str(r["patient_id"]), truth), []).append(i)
    keys = sorted(units, key=repr)
    thr = np.asarray(thresholds if thresholds is not None else [0.5] * len(findings), dtype=float)
    return PatientFindings(
        np.asarray([k[0] for k in keys], dtype=object),
        findings,
        np.asarray([probs[units[k]].mean(axis=0) for k in keys], dtype=float).reshape(-1, len(findings)),
        np.asarray([[math.nan if v is None else v for v in k[1]] for k in keys], dtype=float).reshape(
            -1, len(findings)
        ),
        np.asarray([len(units[k]) for k in keys], dtype=int),
        thr,
    )
