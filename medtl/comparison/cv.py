"""``medtl cv``: train every cross-validation fold of one experiment and report the mean over folds with intervals.

A stratified test set of ``splits.test_fraction`` is held out first and the other patients are dealt into
``splits.folds`` stratified folds (:func:`medtl.data.splits.make_splits`); fold ``k`` is trained on the other folds,
validated (checkpoint chosen) on fold ``k`` and tested on the held-out test patients, the same for every fold. Each
fold is a normal run folder ``<cv dir>/fold<k>/`` trained from ``<cv dir>/splits_fold<k>.csv``, with the comparison's
launcher, reuse records and locks (:mod:`medtl.comparison.launch`): running ``cv`` again reuses finished folds made
from the same config, manifest, splits, pseudonym secret and weights file, trains unfinished ones, and refuses
(:class:`~medtl.comparison.compare.ComparisonChangedError`) when a finished fold would change.

The report (``cv_report.md``, ``cv_report.html``, ``cv_results.json``, ``cv_results.csv``) gives, per metric, the
mean over folds of the validation-fold values with a t-interval over folds (uncorrected, and corrected for the
overlap of the folds' training sets as Nadeau and Bengio propose), and the mean over folds of each fold's model on the
test patients with an interval over folds and test patients (:func:`medtl.comparison.stats.repeated_mean`). Metrics
are computed per patient, as ``compare`` computes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medtl.comparison.compare import ComparisonChangedError, check_not_held, fold_splits
from medtl.comparison.launch import (
    Job,
    RunInputs,
    execute,
    file_sha256,
    is_finished,
    key_changes,
    key_record,
    read_key_record,
    weights_sha256,
)
from medtl.comparison.render import Block, render_html, render_md
from medtl.comparison.stats import fold_ratio, mean_ci, repeated_mean
from medtl.errors import ConfigError, MedtlError
from medtl.metric_specs import METRIC_SPECS, default_metric, metric_spec
from medtl.rundir import RunDir, folder_lock, json_clean
from medtl.utils import atomic_write_bytes

__all__ = ["FoldRecord", "CVReport", "cross_validate", "fold_dir", "CV_FILES"]

#: what ``cv`` writes beside the fold folders
CV_FILES = ("cv_config.yaml", "cv_report.md", "cv_report.html", "cv_results.json", "cv_results.csv")
_SPLITS = "splits_fold{fold}.csv"
_SHOWN_CHANGES = 8


def fold_dir(cv_dir: str | Path, fold: int) -> Path:
    """``<cv dir>/fold<k>``: the run folder of fold ``k``."""
    return Path(cv_dir) / f"fold{fold}"


@dataclass
class FoldRecord:
    """One fold's run: its status, patient counts and per-patient metrics on its validation fold and the test set.

    Attributes:
        fold: the fold (its validation part).
        status: ``ok``, ``failed``, ``interrupted`` or ``pending``.
        error: why it failed.
        run_dir: the run folder.
        n_train_patients: patients it trained on; ``n_val_patients``, ``n_test_patients`` likewise.
        val: metric -> value over the validation fold's patients (the checkpoint was chosen on them).
        test: metric -> value over the held-out test patients.
        val_units: the per-patient units of the validation fold; ``test_units`` of the test patients.
    """

    fold: int
    status: str = "pending"
    error: str | None = None
    run_dir: str = ""
    n_train_patients: int | None = None
    n_val_patients: int | None = None
    n_test_patients: int | None = None
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    val_units: Any = None
    test_units: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("val_units", "test_units")}
        d["val_units"] = self.val_units.to_dict() if self.val_units is not None else None
        d["test_units"] = self.test_units.to_dict() if self.test_units is not None else None
        return d


@dataclass
class CVReport:
    """What :func:`cross_validate` returns: the folds, the summary per metric, and the files written."""

    folds: list[FoldRecord]
    metrics: dict[str, dict[str, Any]]
    primary_metric: str
    cv_dir: Path
    report_md: Path
    report_html: Path
    results_json: Path
    results_csv: Path

    def lines(self) -> list[str]:
        """The summary in a few lines, for the console."""
        out = []
        for m, s in self.metrics.items():
            if m not in METRIC_SPECS:
                continue
            spec = metric_spec(m)
            val, test = s["val"], s["test"]
            text = (
                f"{spec.words}: validation folds {spec.amount(val['mean'])} "
                f"(95% CI {_ci(spec, val['corrected'])}, corrected; {_ci(spec, val['t'])} uncorrected)"
            )
            if test:
                text += f"; test {spec.amount(test['mean'])} (95% CI {_ci(spec, test)}, folds and test patients)"
            out.append(text)
        failed = [f for f in self.folds if not f.ok]
        if failed:
            out.append(
                f"{len(failed)} fold(s) did not finish: " + "; ".join(f"fold {f.fold}: {f.error}" for f in failed)
            )
        return out


def _ci(spec: Any, d: dict[str, Any]) -> str:
    low, high = d.get("low"), d.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{spec.amount(low)} to {spec.amount(high)}"


def default_cv_dir(experiment: Any) -> Path:
    """``<output.dir>/cv-<output.name or arch>`` (characters a run name cannot hold become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9_.+=@,-]+", "_", experiment.output.name or experiment.model.arch)
    return Path(experiment.output.dir) / f"cv-{name}"


def cross_validate(
    config: str | Path | dict[str, Any] | Any,
    *,
    folds: int | None = None,
    out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    on_event: Callable[[str], None] | None = None,
    parallel: int = 1,
    launcher: Any = "local",
    n_resamples: int = 2000,
) -> CVReport:
    """Train fold 0..k-1 of an experiment and report the mean over folds with intervals.

    Args:
        config: an experiment config (YAML path, dict or :class:`~medtl.config.ExperimentConfig`).
        folds: the number of folds (default ``splits.folds``).
        out_dir: the cross-validation folder (default ``<output.dir>/cv-<output.name or arch>``).
        overrides: experiment overrides by dotted key (``{"train.epochs": 2}``).
        on_event: called with a line as folds start, finish, fail or are reused.
        parallel: folds trained at once on this machine (:func:`medtl.comparison.launch.execute`).
        launcher: ``"local"`` or a submitit executor, as for ``compare``.
        n_resamples: patient bootstrap resamples of the test-set interval.

    Returns:
        A :class:`CVReport`; ``cv_report.md``, ``cv_report.html``, ``cv_results.json`` and ``cv_results.csv`` are in
        its ``cv_dir``.

    Raises:
        ConfigError: no number of folds, or a config that fixes one split for every fold (``splits.file``, a manifest
            ``split`` column).
        ComparisonChangedError: a finished fold was made from other settings (the message lists what changed);
            nothing was written.
        RunLockedError: another ``cv`` holds the folder, or another process a fold that would be trained again.
    """
    from medtl.config import load_config

    say = on_event or (lambda msg: None)
    over = dict(overrides or {})
    if folds is not None:
        over["splits.folds"] = folds
    experiment = load_config(config, over)
    k = experiment.splits.folds
    if k is None:
        raise ConfigError(
            "cross-validation needs a number of folds", fix="pass --folds 5 (folds=5) or set splits.folds"
        )
    cv_dir = Path(out_dir) if out_dir is not None else default_cv_dir(experiment)
    cv_dir = cv_dir.expanduser().resolve()  # absolute: each fold's config.yaml names its splits file
    with folder_lock(
        cv_dir,
        what="cross-validation folder",
        fix="wait for that cv to end, or pass --out NEW_DIR (a process on another machine that is gone: delete the "
        "folder's .lock)",
    ):
        return _cross_validate(experiment, k, cv_dir, say, parallel=parallel, launcher=launcher, resamples=n_resamples)


def _cross_validate(
    experiment: Any, k: int, cv_dir: Path, say: Callable[[str], None], *, parallel: int, launcher: Any, resamples: int
) -> CVReport:
    """:func:`cross_validate` with the folder's lock held: check, then write, then train and report."""
    from medtl.config import load_config
    from medtl.tasks import task_class
    from medtl.train.experiment import pseudonym_check

    task_cls = task_class(experiment.task)
    manifest = task_cls.read_manifest(experiment)
    rendered = fold_splits(experiment, manifest)
    path = Path(experiment.data.manifest)
    manifest_sha = file_sha256(path) if path.is_file() else str(path)
    check = pseudonym_check()
    classes = task_cls.output_names(experiment, manifest)
    weight_hashes: dict[str, str | None] = {}
    jobs: list[Job] = []
    changes: list[str] = []
    unfinished: list[Path] = []
    notes: list[str] = []
    for j in range(k):
        run_dir = fold_dir(cv_dir, j)
        inputs = RunInputs(manifest_sha, hashlib.sha256(rendered[j]).hexdigest(), check)
        run_cfg = load_config(
            experiment.to_dict(),
            {
                "splits.folds": k,
                "splits.fold": j,
                "splits.file": str(cv_dir / _SPLITS.format(fold=j)),
                "output.dir": str(cv_dir),
                "output.name": run_dir.name,
            },
        )
        key_rec = key_record(
            run_cfg, dataclasses.replace(inputs, weights_sha256=weights_sha256(run_cfg.model.weights, weight_hashes))
        )
        run = RunDir(run_dir)
        tag = f"[fold {j + 1}/{k}]"
        if is_finished(run, key_rec["key"]):
            notes.append(f"{tag} finished earlier, reusing {run_dir}")
            continue
        if _status(run) == "ok":  # finished from other inputs: never retrained silently
            changes += [c for c in key_changes(read_key_record(run), key_rec) if c not in changes]
        elif run_dir.exists():
            unfinished.append(run_dir)
        jobs.append(Job(j, tag, run_cfg.to_dict(), str(run_dir), key_rec))
    if changes:
        shown = ", ".join(changes[:_SHOWN_CHANGES])
        if len(changes) > _SHOWN_CHANGES:
            shown += f" and {len(changes) - _SHOWN_CHANGES} more"
        raise ComparisonChangedError(
            f"cross-validation folder {cv_dir} holds folds made with other settings ({shown}); nothing was changed",
            path=str(cv_dir),
            fix="pass --out NEW_DIR (out_dir=) for a new cross-validation beside it, or move the fold folders away",
        )
    check_not_held(unfinished)
    # -- writes
    (cv_dir / "cv_config.yaml").write_text(yaml.safe_dump(experiment.to_dict(), sort_keys=False, allow_unicode=True))
    for j in range(k):
        atomic_write_bytes(cv_dir / _SPLITS.format(fold=j), rendered[j])
    for msg in notes:
        say(msg)
    interrupted = False
    try:
        for j, seconds in execute(jobs, parallel=parallel, launcher=launcher, say=say):
            status = _status(RunDir(fold_dir(cv_dir, j)))
            say(f"[fold {j + 1}/{k}] {'done' if status == 'ok' else status.upper()} ({seconds:.0f} s)")
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing the report of the folds finished so far")
    records = [_fold_record(cv_dir, j, task_cls, classes) for j in range(k)]
    report = _write(records, experiment, cv_dir, k, resamples)
    if interrupted:
        raise KeyboardInterrupt(
            f"partial report of the finished folds: {report.report_html}; run the same command again"
        )
    return report


def _status(run: RunDir) -> str:
    try:
        return run.status
    except MedtlError:
        return "failed"


def _split_units(run: RunDir, split: str, task_cls: Any, classes: list[str]) -> Any:
    """A finished run's per-patient units of ``split`` (val or test), made as ``compare`` makes its test units
    (:meth:`~medtl.tasks.base.Task.patient_units` reads ``predictions_test.csv``: the split's file is given it under
    that name, beside the run's preprocessing.json)."""
    if split == "test":
        return task_cls.patient_units(run, classes)
    with tempfile.TemporaryDirectory(prefix="medtl-cv-") as tmp:
        view = RunDir(tmp)
        shutil.copy2(run.predictions_file(split), view.predictions_file("test"))
        if run.file(RunDir.PREPROCESSING).is_file():
            shutil.copy2(run.file(RunDir.PREPROCESSING), view.file(RunDir.PREPROCESSING))
        return task_cls.patient_units(view, classes)


def _fold_record(cv_dir: Path, j: int, task_cls: Any, classes: list[str]) -> FoldRecord:
    run = RunDir(fold_dir(cv_dir, j))
    rec = FoldRecord(j, run_dir=str(run.path))
    if not run.path.is_dir():
        return rec
    try:
        result = run.read_result()
    except MedtlError as exc:
        return dataclasses.replace(rec, status="failed", error=str(exc))
    rec.status = str(result.get("status", "pending"))
    rec.error = result.get("error")
    counts = result.get("n_patients") or {}
    rec.n_train_patients, rec.n_val_patients, rec.n_test_patients = (counts.get(s) for s in ("train", "val", "test"))
    if not rec.ok:
        return rec
    try:
        rec.val_units = _split_units(run, "val", task_cls, classes)
        rec.val = {m: rec.val_units.metric(m) for m in rec.val_units.metric_names}
        if run.predictions_file("test").is_file():
            rec.test_units = _split_units(run, "test", task_cls, classes)
            rec.test = {m: rec.test_units.metric(m) for m in rec.test_units.metric_names}
    except (MedtlError, OSError, ValueError) as exc:
        rec.status, rec.error = "failed", f"its predictions do not read: {exc}"
    return rec


def _summary(records: list[FoldRecord], k: int, resamples: int) -> dict[str, dict[str, Any]]:
    """Per metric: the validation folds' mean with the t-interval over folds (uncorrected and corrected), and the
    test set's mean over folds with the interval over folds and test patients."""
    ok = [r for r in records if r.ok and r.val_units is not None]
    names = list(ok[0].val_units.metric_names) if ok else []
    ratio = fold_ratio(k)
    tested = [r for r in ok if r.test_units is not None and len(r.test_units)]
    out: dict[str, dict[str, Any]] = {}
    for m in names:
        bounds = metric_spec(m).bounds
        values = [r.val.get(m, math.nan) for r in ok]
        naive = mean_ci(values, bounds=bounds)
        corrected = mean_ci(values, bounds=bounds, fold_ratio=ratio)
        entry: dict[str, Any] = {
            "val": {
                "mean": naive.mean,
                "n": naive.n,
                "sd": naive.std,
                "per_fold": values,
                "t": {"low": naive.low, "high": naive.high},
                "corrected": {"low": corrected.low, "high": corrected.high},
            },
            "test": {},
        }
        if tested:
            rm = repeated_mean(
                [r.test_units for r in tested], m, fold_ratio=ratio, n_resamples=resamples, bounds=bounds
            )
            entry["test"] = rm.to_dict() | {"per_fold": [r.test.get(m, math.nan) for r in tested]}
        out[m] = entry
    return out


_METHOD = (
    "Every fold is a run trained on the other folds, its checkpoint chosen on its own validation fold (train.monitor), "
    "then tested on the held-out test patients, the same for every fold. Metrics are computed per patient (each "
    "patient's scans aggregated, as compare does). Validation folds: the mean over folds of each fold's value on its "
    "own validation patients; these are optimistic, as the checkpoint was chosen on them. Their 't' interval is the "
    "usual t-interval over folds (SD / sqrt(k)); it takes the folds for independent, but two folds share "
    "(k - 2) / (k - 1) of their training patients, so it is too narrow. The corrected interval is Nadeau and Bengio's "
    "corrected resampled t (Machine Learning 52, 2003): the variance SD^2 (1/k + n_left_out / n_train), with "
    "n_left_out / n_train = 1 / (k - 1), and k - 1 degrees of freedom. Test: the mean over folds of each fold's model "
    "on the test patients; its interval combines the fold spread (corrected the same way) with the variance over test "
    "patients that every fold shares (a patient bootstrap), as compare's paired intervals do. The correction holds "
    "when the fold-to-fold spread is mostly training noise rather than which patients trained the model "
    "(tests/comparison/test_cv_calibration.py; README: Cross-validation)."
)


def _write(records: list[FoldRecord], experiment: Any, cv_dir: Path, k: int, resamples: int) -> CVReport:
    import csv
    import io

    summary = _summary(records, k, resamples)
    primary = default_metric(experiment.task)
    names = list(summary)
    # -- json and csv
    data = {
        "task": experiment.task,
        "folds": k,
        "primary_metric": primary,
        "fold_ratio": fold_ratio(k),
        "n_resamples": resamples,
        "method": _METHOD,
        "metrics": summary,
        "fold_runs": [r.to_dict() for r in records],
        "config": experiment.to_dict(),
    }
    rj, rc = cv_dir / "cv_results.json", cv_dir / "cv_results.csv"
    atomic_write_bytes(rj, json.dumps(json_clean(data), indent=1, allow_nan=False).encode())
    buf = io.StringIO()
    fields = ["fold", "status", "n_train_patients", "n_val_patients", "n_test_patients"]
    fields += [f"val_{m}" for m in names] + [f"test_{m}" for m in names] + ["run_dir", "error"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in records:
        row = {f: getattr(r, f) for f in ("fold", "status", "n_train_patients", "n_val_patients", "n_test_patients")}
        row |= {f"val_{m}": _num(r.val.get(m)) for m in names} | {f"test_{m}": _num(r.test.get(m)) for m in names}
        row |= {"run_dir": r.run_dir, "error": r.error or ""}
        w.writerow({key: "" if v is None else v for key, v in row.items()})
    atomic_write_bytes(rc, buf.getvalue().encode())
    # -- report
    n_ok = sum(r.ok for r in records)
    test_n = next((r.n_test_patients for r in records if r.n_test_patients), 0)
    b = [Block("h1", f"Cross-validation: {experiment.output.name or experiment.model.arch}, {k} folds")]
    b.append(
        Block(
            "p",
            f"{experiment.model.arch}, weights {experiment.model.weights}, task {experiment.task}: {n_ok} of {k} "
            f"folds finished. {test_n} test patients held out for every fold; the other patients dealt into {k} "
            f"stratified folds (splits.seed {experiment.splits.seed}).",
        )
    )
    b.append(Block("h2", "Summary (mean over folds, 95% intervals)"))
    rows = []
    for m in names:
        spec = metric_spec(m)
        val, test = summary[m]["val"], summary[m]["test"]
        rows.append(
            [
                spec.label,
                spec.amount(val["mean"]),
                _ci(spec, val["corrected"]),
                _ci(spec, val["t"]),
                spec.amount(test["mean"]) if test else "n/a",
                _ci(spec, test) if test else "n/a",
            ]
        )
    b.append(
        Block(
            "table",
            header=[
                "metric",
                "validation folds (mean)",
                "95% CI (corrected)",
                "95% CI (t over folds, uncorrected)",
                "test (mean over folds)",
                "95% CI (folds and test patients)",
            ],
            rows=rows,
        )
    )
    b.append(Block("p", _METHOD))
    b.append(Block("h2", "Folds"))
    spec = metric_spec(primary)
    fold_rows = [
        [
            str(r.fold),
            r.status + (f": {r.error}" if r.error else ""),
            *(str(v) if v is not None else "" for v in (r.n_train_patients, r.n_val_patients, r.n_test_patients)),
            spec.amount(r.val[primary]) if primary in r.val else "n/a",
            spec.amount(r.test[primary]) if primary in r.test else "n/a",
            r.run_dir,
        ]
        for r in records
    ]
    b.append(
        Block(
            "table",
            header=[
                "fold",
                "status",
                "train patients",
                "validation patients",
                "test patients",
                f"validation {spec.label}",
                f"test {spec.label}",
                "run folder",
            ],
            rows=fold_rows,
        )
    )
    md, htm = cv_dir / "cv_report.md", cv_dir / "cv_report.html"
    atomic_write_bytes(md, render_md(b, cv_dir).encode())
    atomic_write_bytes(htm, render_html(b).encode())
    return CVReport(records, summary, primary, cv_dir, md, htm, rj, rc)


def _num(v: Any) -> str:
    return "" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.6g}"
