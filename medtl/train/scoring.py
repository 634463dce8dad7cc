"""Score a finished run on a labelled manifest: ``evaluate`` (classification or segmentation).

Rows of the run's own training or validation patients (by patient ID, or by scan path in the run's manifest)
would inflate the metrics: they are refused, or with ``allow_seen`` scored apart.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.errors import ConfigError, MedtlError, TrainingError
from medtl.io.output import check_not_an_input
from medtl.rundir import RunDir, write_prediction_csv
from medtl.train.experiment import check_pseudonyms
from medtl.train.inference import inference_device, predict_dataset, records_from_inputs
from medtl.train.predict import LoadedRun, _check_output_file, input_paths, load_run

__all__ = [
    "evaluate",
    "evaluate_loaded",
    "evaluate_rows",
    "evaluate_segmentation",
    "describe_evaluation",
    "interval_text",
    "GRIDS",
    "RESAMPLES",
]

GRIDS = ("native", "preprocessed")
"""Where :func:`evaluate_segmentation` scores: each scan's own grid, or the grid the model sees."""
RESAMPLES = 2000
"""Patient-bootstrap resamples of the intervals :func:`evaluate` gives each metric."""
SITE_COLUMN = "site"
"""A manifest column of this name gets each site's metrics with their intervals (``result["sites"]``)."""


def evaluate(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    grid: str = "native",
) -> dict[str, Any]:
    """The metrics of a run on a labelled manifest (:meth:`Task.evaluate <medtl.tasks.base.Task.evaluate>` of the
    run's task), each with a 95% patient-bootstrap interval.

    Rows of patients the run trained or validated on would inflate the metrics: they are refused, or with
    ``allow_seen`` scored apart (``result["seen"]``) while the headline metrics cover unseen patients only.

    The unseen scans also become per-patient units as ``compare`` makes them
    (:meth:`~medtl.tasks.base.Task.evaluation_units`): ``result["patient_metrics"]`` holds each metric over them and
    ``result["ci"]`` its 95% interval, the 2.5 and 97.5 percentiles of :data:`RESAMPLES` patient-bootstrap resamples
    (:func:`medtl.bootstrap.bootstrap_intervals`: patients drawn with replacement, within the task's strata; seed 0).
    With a ``site`` column, ``result["sites"]`` holds the same per site. The report of an evaluation (``medtl evaluate
    --report``) is the comparison layer's: :func:`medtl.comparison.external.evaluate_run`.

    A segmentation run is scored on a manifest with ``image``, a mask column (``segmentation.mask_column``: NIfTI
    label maps or DICOM SEG) and ``patient_id`` (a ``label`` column is optional): see
    :func:`evaluate_segmentation`, on each scan's own grid unless ``grid="preprocessed"``.

    Returns:
        The task's metrics over the unseen rows (classification: ``n``, ``accuracy``, ``balanced_accuracy``,
        ``auroc``, ``f1``, ``confusion_matrix``), plus ``task``, ``classes``, ``seen``, ``scans`` (every row's
        prediction with its ``split``: train, val, test or new), ``n_patients``, ``patient_metrics``, ``ci``,
        ``ci_method``, ``units`` (the per-patient units, hashed IDs) and, with a ``site`` column, ``sites``; with
        ``out``, the ``scans`` rows are written there as CSV. Segmentation: see :func:`evaluate_segmentation`.

    Raises:
        TrainingError: the manifest has no rows, or holds rows of the run's training/validation patients.
        ConfigError: ``grid`` is neither ``native`` nor ``preprocessed``.
    """
    _check_grid(grid)
    return evaluate_loaded(load_run(run_dir), manifest, out=out, allow_seen=allow_seen, grid=grid)


def evaluate_loaded(
    loaded: LoadedRun,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    grid: str = "native",
) -> dict[str, Any]:
    """:func:`evaluate` of a run already loaded (:func:`~medtl.train.predict.load_run`)."""
    _check_grid(grid)
    return loaded.task.evaluate(
        loaded, manifest, out=None if out is None else Path(out), allow_seen=allow_seen, grid=grid
    )


def evaluate_rows(
    loaded: LoadedRun,
    manifest: str | Path,
    *,
    out: Path | None = None,
    allow_seen: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` for a task that gives one row of values per scan (scores and metrics are the task's)."""
    if out is not None:
        _check_output_file(Path(out))
    records, _ = records_from_inputs([manifest], loaded.task.read_labelled)
    _check_outputs(loaded, manifest, records, [Path(out)] if out is not None else [])
    where = _splits_of(loaded, records, manifest, allow_seen)
    scores, targets, ids = predict_dataset(
        loaded.model,
        loaded.task.eval_dataset(loaded.config, loaded.pipeline, records),
        loaded.task,
        batch_size=loaded.config.train.batch_size,
        device=inference_device(device),
    )
    rows = loaded.task.prediction_rows(records, scores, ids, with_labels=True)
    for row, sid in zip(rows, ids.tolist(), strict=True):
        row["split"] = where[sid]
    if out is not None:
        write_prediction_csv(Path(out), loaded.task.prediction_columns(with_labels=True) + ["split"], rows)
    group = [where[i] for i in ids.tolist()]
    unseen = torch.tensor([g not in ("train", "val") for g in group], dtype=torch.bool)
    result = loaded.task.metrics(scores[unseen], targets[unseen])
    result |= {"task": loaded.task.name, "classes": loaded.classes, "seen": {}, "scans": rows}
    for split in ("train", "val"):
        sel = torch.tensor([g == split for g in group], dtype=torch.bool)
        if bool(sel.any()):
            result["seen"][split] = loaded.task.metrics(scores[sel], targets[sel])
    for key, value in _intervals(loaded, records, scores[unseen], ids[unseen]).items():
        result.setdefault(key, value)
    return result


def _intervals(
    loaded: LoadedRun,
    records: list[dict[str, Any]],
    scores: torch.Tensor,
    ids: torch.Tensor,
    *,
    n_resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The per-patient metrics of the evaluated (unseen) scans and their patient-bootstrap intervals, overall and per
    site: the units the run's task makes for ``compare`` (:meth:`~medtl.tasks.base.Task.evaluation_units`), resampled
    as ``compare`` resamples test patients."""
    from medtl.bootstrap import bootstrap_intervals

    task = loaded.task
    method = (
        f"2.5 and 97.5 percentiles of {n_resamples} patient-bootstrap resamples ({task.bootstrap_units()}; "
        f"seed {seed}); the trained model is taken as given"
    )
    out: dict[str, Any] = {"n_patients": 0, "patient_metrics": {}, "ci": {}, "ci_method": method, "units": None}
    if len(ids) == 0:
        return out

    def summary(sel: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        units = task.evaluation_units(records, scores[sel], ids[sel], run=loaded.run)
        iv = bootstrap_intervals(units, n_resamples=n_resamples, seed=seed)
        return units, {
            "n": int(sel.sum()),
            "n_patients": len({str(p) for p in units.patient_id}),
            "patient_metrics": {m: v.value for m, v in iv.items()},
            "ci": {m: [v.low, v.high] for m, v in iv.items()},
        }

    units, overall = summary(torch.ones(len(ids), dtype=torch.bool))
    out |= {k: v for k, v in overall.items() if k != "n"} | {"units": units.to_dict()}
    site_of = [str(records[i].get(SITE_COLUMN) or "").strip() for i in ids.tolist()]
    if any(site_of):
        out["sites"] = {
            site: summary(torch.tensor([s == site for s in site_of], dtype=torch.bool))[1]
            for site in sorted(set(site_of), key=lambda s: (s == "", s))
        }
    return out


def _check_outputs(loaded: LoadedRun, manifest: str | Path, records: list[dict[str, Any]], outputs: list[Path]) -> None:
    """Refuse, before the first scan is scored, an output file that is the manifest, a file it names (an image, a
    reference mask, any other path column), lies inside a scan folder it names, or lies inside the run folder.

    Raises:
        MedtlError: the first such output, named with the input it would overwrite.
    """
    if not outputs:
        return
    out = outputs[0]
    named = [(out, f"--out {out}")] + [(p, f"the per-patient file {p} (written next to --out)") for p in outputs[1:]]
    check_not_an_input(
        named, input_paths([manifest], records), run_dir=loaded.run.path, fix="give another file name as --out"
    )


def _check_grid(grid: str) -> None:
    if grid not in GRIDS:
        raise ConfigError(f"grid {grid!r} is not one of {', '.join(GRIDS)}", fix="use --grid native or preprocessed")


def _splits_of(loaded: LoadedRun, records: list[dict[str, Any]], manifest: str | Path, allow_seen: bool) -> list[str]:
    """Each record's split in the run (train, val, test, or new: a patient the run never saw).

    Raises:
        TrainingError: no records; rows of the run's training/validation patients without ``allow_seen``.
    """
    if not records:
        raise TrainingError(f"manifest {manifest} has no rows to evaluate on", path=str(manifest))
    check_pseudonyms(loaded.run.path, loaded.preprocessing.get("pseudonym_check"))
    assignment = loaded.run.read_splits() if loaded.run.file(RunDir.SPLITS).is_file() else {}
    own = _run_scan_splits(loaded, assignment)
    where = []
    for r in records:
        by_patient = assignment.get(str(r.get("patient_id")), "new")
        # a scan the run itself trained or validated on is seen whatever patient ID this manifest gives it (none:
        # a NIfTI file's name stands in, which would pass the run's own scans off as new patients)
        by_scan = own.get((_resolved(r.get("image")), r.get("series") or None))
        where.append(by_scan if by_scan in ("train", "val") and by_patient not in ("train", "val") else by_patient)
    seen = Counter(w for w in where if w in ("train", "val"))
    if seen and not allow_seen:
        rows = [str(r.get("row")) for r, w in zip(records, where, strict=True) if w in ("train", "val")][:8]
        verbs = "/".join({"train": "trained", "val": "validated"}[k] for k in sorted(seen))
        raise TrainingError(
            f"manifest {manifest} holds {sum(seen.values())} row(s) of patients the run {verbs} on "
            f"(rows {', '.join(rows)}...): their metrics would be inflated",
            path=str(manifest),
            fix="evaluate on other patients, or pass --allow-seen to score them separately",
        )
    return where


def _resolved(image: Any) -> str:
    return str(Path(str(image)).resolve()) if image else ""


def _run_scan_splits(loaded: LoadedRun, assignment: dict[str, str]) -> dict[tuple[str, str | None], str]:
    """``(image path, series) -> split`` of the scans of the run's own manifest (its config's ``data.manifest``);
    empty when that manifest is gone or no longer reads (then only patient IDs tell seen rows)."""
    import warnings

    from medtl.data import Manifest

    path = Path(str(loaded.config.data.manifest))
    if not assignment or not path.is_file():
        return {}
    try:
        with warnings.catch_warnings():  # the run's own manifest: its warnings were given when it trained
            warnings.simplefilter("ignore")
            manifest = Manifest.from_csv(path, labels_required=False, check_files=False)
    except (MedtlError, OSError, ValueError):
        return {}
    return {
        (_resolved(r.image), r.series or None): assignment[r.patient_id] for r in manifest if r.patient_id in assignment
    }


def _segmentation_records(loaded: LoadedRun, manifest: str | Path) -> list[dict[str, Any]]:
    """The rows of a segmentation manifest with absolute ``mask`` paths; the ``label`` column is optional."""
    from medtl.data import Manifest
    from medtl.tasks.segmentation import attach_masks

    path = Path(manifest)
    records = Manifest.from_csv(path, labels_required=False).to_dicts()
    attach_masks(records, path, loaded.config.segmentation.mask_column)
    return records


def evaluate_segmentation(
    run: str | Path | LoadedRun,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    device: str | None = None,
    grid: str = "native",
) -> dict[str, Any]:
    """Dice, HD95 and surface Dice of a segmentation run on a manifest of images and reference masks.

    Each scan goes through the run's own preprocessing and sliding-window inference and is scored per foreground
    class (:class:`~medtl.tasks.segmentation.SegmentationTask`: both masks empty = Dice 1, HD95 0; one empty =
    Dice 0, HD95 undefined). With ``grid="native"`` (the default) the prediction is put back on the scan's own grid
    (as ``predict`` writes it) and scored against the reference mask there, distances in the scan's voxel size:
    the numbers a reader's own tools give for the written masks. ``grid="preprocessed"`` scores on the resampled,
    padded or resized grid the model sees, as the run's validation metrics do. Patients the run
    trained or validated on are refused, or with ``allow_seen`` scored apart.

    Args:
        run: a finished segmentation run folder (or a loaded run).
        manifest: CSV with ``image``, the run's mask column (NIfTI label maps or DICOM SEG) and ``patient_id``.
        out: write the per-scan rows here as CSV (the columns of the run's ``predictions_test.csv`` and ``split``),
            and the per-patient means next to it, ``<stem>_patients.csv``.
        allow_seen: score the run's own training/validation patients separately instead of refusing.
        device: default cuda when available.
        grid: ``native`` (each scan's own grid) or ``preprocessed`` (the model's grid, as in training).

    Returns:
        The overall means over unseen scans (``n``, ``dice``, ``hd95``, ``surface_dice``, per class
        ``<metric>_<class>``, ``hd95_undefined``, and the task's per-patient means where it gives them), plus
        ``task``, ``classes``, ``n_patients``, ``patient_mean`` (the means of the per-patient rows' columns),
        ``scans`` (per-scan rows), ``patients`` (per-patient rows: ``patient_id`` (pseudonym), ``n_scans`` and
        the mean of each per-scan column) and ``seen`` (split -> means of the seen patients' scans).

    Raises:
        TrainingError: no rows; rows of seen patients without ``allow_seen``.
        ManifestError: a missing mask column or file.
        ConfigError: ``grid`` is neither ``native`` nor ``preprocessed``.
    """
    _check_grid(grid)
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if out is not None:
        _check_output_file(Path(out))
        _check_output_file(_patients_csv(Path(out)))
    task = loaded.task
    records = _segmentation_records(loaded, manifest)
    _check_outputs(loaded, manifest, records, [Path(out), _patients_csv(Path(out))] if out is not None else [])
    where = _splits_of(loaded, records, manifest, allow_seen)
    if grid == "native":
        from medtl.train.seg_inference import native_split_scores
        from medtl.transforms.segmentation import build_inference_transforms

        transforms = build_inference_transforms(loaded.config, loaded.record)
        scores, _, ids = native_split_scores(
            loaded.model,
            task,  # type: ignore[arg-type]
            transforms,
            records,
            device=inference_device(device),
        )
    else:
        dataset = task.eval_dataset(loaded.config, loaded.pipeline, records)
        scores, _, ids = predict_dataset(
            loaded.model,
            dataset,  # type: ignore[arg-type]
            task,
            batch_size=loaded.config.train.batch_size,
            device=inference_device(device),
        )
    # each scan's patient index as its target, as the run's own test metrics take it (per-patient means)
    pids = sorted({str(r.get("patient_id", "")) for r in records})
    targets = torch.tensor([pids.index(str(records[i].get("patient_id", ""))) for i in ids.tolist()], dtype=torch.long)
    rows = task.prediction_rows(records, scores, ids, with_labels=True)
    group = [where[i] for i in ids.tolist()]
    for row, split in zip(rows, group, strict=True):
        row["split"] = split
    columns = task.prediction_columns(with_labels=True)
    metric_columns = columns[columns.index("dice") :]
    unseen = torch.tensor([g not in ("train", "val") for g in group], dtype=torch.bool)
    unseen_rows = [r for r, g in zip(rows, group, strict=True) if g not in ("train", "val")]
    patients = _patient_means(unseen_rows, metric_columns)
    result: dict[str, Any] = task.metrics(scores[unseen], targets[unseen])
    result |= {
        "task": task.name,
        "classes": list(task.classes),
        "n_patients": len(patients),
        "patient_mean": {c: _nanmean([p[c] for p in patients]) for c in metric_columns},
        "scans": rows,
        "patients": patients,
        "seen": {},
        "grid": grid,
    }
    for split in ("train", "val"):
        sel = torch.tensor([g == split for g in group], dtype=torch.bool)
        if bool(sel.any()):
            result["seen"][split] = task.metrics(scores[sel], targets[sel])
    for key, value in _intervals(loaded, records, scores[unseen], ids[unseen]).items():
        result.setdefault(key, value)
    if out is not None:
        out = Path(out)
        write_prediction_csv(out, columns + ["split"], rows)
        write_prediction_csv(_patients_csv(out), ["patient_id", "n_scans", *metric_columns], patients)
    return result


def _patients_csv(out: Path) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}_patients.csv")


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan


def _patient_means(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """One row per patient: ``patient_id``, ``n_scans`` and the mean of each metric over the patient's scans
    (undefined values, HD95 of a class missing from one mask, left out)."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_patient.setdefault(str(row.get("patient_id", "")), []).append(row)
    return [
        {"patient_id": pid, "n_scans": len(group)} | {c: _nanmean([float(r[c]) for r in group]) for c in columns}
        for pid, group in sorted(by_patient.items())
    ]


def describe_evaluation(result: dict[str, Any]) -> list[str]:
    """The lines ``medtl evaluate`` prints for a result of :func:`evaluate` (the run's task says how), then each metric
    per patient with its 95% interval (``AUROC 0.912 (95% CI 0.850 to 0.960)``), overall and per site."""
    from medtl.tasks import task_class

    lines = task_class(str(result.get("task") or "classification")).describe_evaluation(result)
    if result.get("ci"):
        n = result.get("n_patients", 0)
        lines.append(f"per patient ({n} patient(s)), with 95% patient-bootstrap intervals:")
        lines.append("  " + interval_text(result))
    for site, values in (result.get("sites") or {}).items():
        name = site or "(no site)"
        lines.append(
            f"  site {name} ({values['n_patients']} patient(s), {values['n']} scan(s)): {interval_text(values)}"
        )
    if result.get("report"):
        lines.append(f"report: {result['report']}")
    return lines


def interval_text(values: dict[str, Any], metrics: list[str] | None = None, *, unit: str | None = None) -> str:
    """``AUROC 0.912 (95% CI 0.850 to 0.960), accuracy ...`` from ``patient_metrics`` and ``ci`` of an evaluation
    (the task's registered metrics; per-class forms stay in the JSON and the report)."""
    from medtl.metric_specs import METRIC_SPECS, metric_spec

    shown = metrics or [m for m in values.get("patient_metrics", {}) if m in METRIC_SPECS]
    parts = []
    for m in shown:
        spec = metric_spec(m, unit=unit or values.get("unit"))
        value = values["patient_metrics"].get(m, math.nan)
        low, high = (values.get("ci") or {}).get(m, [math.nan, math.nan])
        if value is None or not math.isfinite(value):
            parts.append(f"{spec.words} n/a")
        elif low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            parts.append(f"{spec.words} {spec.amount(value)} (no interval)")
        else:
            parts.append(f"{spec.words} {spec.amount(value)} (95% CI {spec.amount(low)} to {spec.amount(high)})")
    return ", ".join(parts)
