"""Predict with a finished run, using the run's own preprocessing; evaluate it on a labelled manifest.

A classification run predicts class probabilities per scan (a CSV) and is evaluated by accuracy, AUROC...; a
segmentation run predicts one NIfTI label map per scan on the scan's own grid (and, with ``dicom_seg``, a DICOM SEG
referencing the source series) and is evaluated by Dice, HD95 and surface Dice per scan, per patient and overall.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.errors import DataLoadError, MedtlError, NoImagesError, RunDirError, TrainingError
from medtl.train.experiment import check_pseudonyms
from medtl.train.inference import eval_dataset, inference_device, predict_dataset, records_from_inputs
from medtl.train.rundir import RunDir, write_prediction_csv
from medtl.train.segmentation import SegmentationTask
from medtl.train.task import ClassificationTask
from medtl.transforms.presets import build_pipeline
from medtl.weights.sources import Normalization

__all__ = [
    "LoadedRun",
    "load_run",
    "default_output",
    "predict",
    "evaluate",
    "evaluate_segmentation",
    "write_prediction_seg",
]

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained run ready to predict: its folder, config, task, pipeline and model (eval mode)."""

    run: RunDir
    config: Any
    task: ClassificationTask | SegmentationTask
    pipeline: Any
    model: torch.nn.Module
    preprocessing: dict[str, Any]
    checkpoint: Path

    @property
    def classes(self) -> list[str]:
        return self.task.classes


def load_run(run_dir: str | Path, *, quiet: bool = False) -> LoadedRun:
    """Rebuild a run's model and transforms from its folder (no pretrained weights needed).

    Raises:
        RunDirError: the folder is not a finished run, or a file of it is corrupt or unsafe.
    """
    from medtl import create_model
    from medtl.train.module import TaskModule
    from medtl.weights.load import read_checkpoint

    run = RunDir(run_dir)
    ckpt, note = run.checkpoint_for_inference()
    if note:
        log.warning(note)
        if not quiet:
            print(note, flush=True)
    cfg = run.read_config()
    pre = run.read_preprocessing()
    norm = pre["normalization"]
    seg = pre.get("task") == "segmentation" and cfg.segmentation is not None
    builder = build_pipeline
    if seg:
        from medtl.transforms.segmentation import build_segmentation_pipeline as builder
    pipeline = builder(
        cfg,
        modality=pre["modality"],
        mode=pre["mode"],
        scan_dims=pre["scan_dims"],
        scan_channels=pre.get("scan_channels", 1),
        flat_volumes=pre.get("flat_volumes", False),
        in_channels=pre["in_channels"],
        normalization=Normalization(norm["kind"], tuple(norm.get("mean") or ()), tuple(norm.get("std") or ())),
    )
    task: ClassificationTask | SegmentationTask = ClassificationTask(list(pre["classes"]))
    if seg:
        from medtl.train.experiment import segmentation_task

        task = segmentation_task(cfg, pipeline)
    model = create_model(
        cfg.model.arch,
        weights="scratch",
        in_channels=pre["in_channels"],
        num_classes=task.num_outputs,
        spatial_dims=pre["model_spatial_dims"],
        **({"task": "segmentation", "decoder_channels": cfg.segmentation.decoder_channels} if seg else {}),
    )
    try:
        state = read_checkpoint(ckpt)
        weights = state["state_dict"]  # type: ignore[index]
    except MedtlError as exc:
        raise RunDirError(f"{ckpt}: {exc}", path=str(ckpt), fix="train the run again") from None
    except (KeyError, TypeError):
        raise RunDirError(f"{ckpt} is not a medtl checkpoint (no state_dict)", path=str(ckpt)) from None
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise RunDirError(f"{ckpt} holds non-finite weights ({bad})", path=str(ckpt), fix="train the run again")
    module = TaskModule(model, task, cfg.train, cfg.resolved_schedule())
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise RunDirError(f"{ckpt} does not fit the run's network: {first}", path=str(ckpt)) from None
    return LoadedRun(run, cfg, task, pipeline, module.model.eval(), pre, ckpt)


def default_output(run_dir: str | Path) -> Path:
    """Where ``medtl predict`` writes without ``--out``: ``predictions.csv`` for a classification run, the folder
    ``masks`` for a segmentation run."""
    try:
        task = RunDir(run_dir).read_preprocessing().get("task")
    except (MedtlError, OSError, ValueError):
        task = None  # predict itself says what is wrong with the folder
    return Path("masks" if task == "segmentation" else "predictions.csv")


def predict(
    run_dir: str | Path,
    inputs: list[str | Path] | str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    dicom_seg: bool = False,
) -> list[dict[str, Any]]:
    """Per-scan class probabilities (classification runs) or masks (segmentation runs), with the run's
    preprocessing.

    Args:
        run_dir: a finished run folder.
        inputs: scan files, DICOM folders, NIfTI files, or manifest CSVs.
        out: classification: write a CSV (image, patient_id, [label,] prob_<class>..., pred) here. Segmentation
            (required): a folder that receives one NIfTI label map per scan, ``<name>_mask.nii.gz``, on the scan's
            own grid and affine.
        batch_size: default the run's.
        device: default cuda when available.
        dicom_seg: segmentation runs with DICOM inputs: also write ``<name>_seg.dcm``, a DICOM SEG (BINARY, one
            segment per foreground class) referencing the source series' instances.

    Returns:
        One dict per scan: classification, the CSV's columns; segmentation, ``image``, ``mask_file``, voxel counts
        per class (and ``seg_file``).

    Raises:
        DataLoadError: an input is not the kind of scan the run was trained on (dimensions, channels, modality);
            ``dicom_seg`` with a non-DICOM input.
        TrainingError: ``dicom_seg`` on a classification run.
    """
    loaded = load_run(run_dir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if loaded.task.name == "segmentation":
        return _predict_masks(loaded, list(inputs), out, device, dicom_seg=dicom_seg)
    if dicom_seg:
        raise TrainingError(
            f"run {loaded.run.path} classifies: --dicom-seg is for segmentation runs", fix="leave out --dicom-seg"
        )
    if out is not None:
        _check_output_file(Path(out), [Path(i) for i in inputs])
    records, labelled = records_from_inputs(list(inputs), loaded.classes)
    scores, _, ids = predict_dataset(
        loaded.model,
        eval_dataset(loaded.config, loaded.pipeline, records),
        loaded.task,
        batch_size=batch_size or loaded.config.train.batch_size,
        device=inference_device(device),
    )
    rows = loaded.task.prediction_rows(records, scores, ids, with_labels=labelled)
    if out is not None:
        write_prediction_csv(Path(out), loaded.task.prediction_columns(with_labels=labelled), rows)
    return rows


def _predict_masks(
    loaded: LoadedRun, inputs: list[str | Path], out: str | Path | None, device: str | None, *, dicom_seg: bool = False
) -> list[dict[str, Any]]:
    """A segmentation run's predict: one NIfTI label map per scan in the folder ``out``, on the scan's grid (and a
    DICOM SEG per scan with ``dicom_seg``)."""
    from medtl.train.segmentation import segment_scans
    from medtl.transforms.segmentation import build_inference_transforms

    if out is None:
        raise TrainingError(
            f"run {loaded.run.path} segments: predict needs an output folder for the masks", fix="pass --out DIR"
        )
    _check_output_folder(Path(out))
    pre = loaded.preprocessing
    transforms = build_inference_transforms(
        loaded.config,
        modality=pre["modality"],
        mode=pre["mode"],
        scan_dims=pre["scan_dims"],
        scan_channels=pre.get("scan_channels", 1),
        flat_volumes=pre.get("flat_volumes", False),
        in_channels=pre["in_channels"],
        normalization=loaded.pipeline.normalization,
    )
    records: list[dict[str, Any]] = []
    for inp in inputs:
        p = Path(inp)
        if p.suffix.lower() == ".csv":
            from medtl.data import Manifest

            records += Manifest.from_csv(p, labels_required=False).to_dicts()
        elif not p.exists():
            raise NoImagesError(f"input {p} does not exist", path=str(p), fix="check the path")
        else:
            records.append({"image": str(p.resolve())})
    if dicom_seg:
        from medtl.io.nifti import is_nifti_path

        nifti = [str(r["image"]) for r in records if is_nifti_path(Path(r["image"]))]
        if nifti:
            raise DataLoadError(
                f"--dicom-seg needs DICOM inputs, but {nifti[0]} is a NIfTI file"
                + (f" (and {len(nifti) - 1} more)" if len(nifti) > 1 else ""),
                path=nifti[0],
                fix="give the DICOM series instead, or leave out --dicom-seg (the NIfTI masks are written anyway)",
            )
    _check_not_inside_inputs(Path(out), [Path(str(r["image"])) for r in records])
    rows = segment_scans(loaded.model, loaded.task, transforms, records, Path(out), device=inference_device(device))  # type: ignore[arg-type]
    if dicom_seg:
        for row, r in zip(rows, records, strict=True):
            row["seg_file"] = str(_write_seg(loaded, r, Path(row["mask_file"])))
    return rows


def _writable_ancestor(path: Path) -> tuple[Path, str | None]:
    """The nearest existing folder at or above ``path`` and, if it cannot receive files there, why not."""
    import os

    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return p, f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return p, f"{p} is not writable"
    return p, None


def _check_output_folder(out: Path) -> None:
    """Refuse, before any scan is segmented, an ``--out`` that cannot become a folder of masks.

    Raises:
        MedtlError: ``out`` is a file, lies under a file, or its nearest existing folder is not writable.
    """
    if out.exists() and not out.is_dir():
        raise MedtlError(
            f"--out {out} is a file; a segmentation run writes one mask per scan into a folder",
            path=str(out),
            fix="give a folder (new or existing) as --out",
        )
    _, problem = _writable_ancestor(out)
    if problem:
        raise MedtlError(
            f"cannot write the masks into {out}: {problem}",
            path=str(out),
            fix="make it writable or give another folder as --out",
        )


def _check_not_inside_inputs(out: Path, images: list[Path]) -> None:
    """Refuse an ``--out`` folder that is, or lies inside, an input scan folder: the masks written there would
    become part of that folder, and the next read of the series would meet them.

    Raises:
        MedtlError: ``out`` is an input folder or inside one.
    """
    target = out.resolve()
    for image in images:
        folder = image.resolve()
        if folder.is_dir() and (target == folder or folder in target.parents):
            raise MedtlError(
                f"--out {out} is inside the input scan folder {image}: the masks would be mixed into the scan's "
                "own files",
                path=str(out),
                fix="give a folder outside the inputs as --out",
            )


def _check_output_file(out: Path, inputs: list[Path] | None = None) -> None:
    """Refuse, before any scan is scored, an ``--out`` CSV path that cannot be written, or that would overwrite
    an input (the manifest).

    Raises:
        MedtlError: ``out`` is a folder or an input file, lies under a file, or its nearest existing folder is not
            writable.
    """
    if out.is_dir():
        raise MedtlError(
            f"--out {out} is a folder; a CSV file is written there (for a segmentation evaluate, also "
            "<name>_patients.csv next to it)",
            path=str(out),
            fix=f"give a file name, e.g. --out {out / 'scores.csv'}",
        )
    for given in inputs or []:
        if given.is_file() and given.resolve() == out.resolve():
            raise MedtlError(
                f"--out {out} is the input {given}: writing the results would overwrite it",
                path=str(out),
                fix="give another file name as --out",
            )
    _, problem = _writable_ancestor(out.parent)
    if problem:
        raise MedtlError(
            f"cannot write {out}: {problem}", path=str(out), fix="make it writable or give another path as --out"
        )


def _write_seg(loaded: LoadedRun, record: dict[str, Any], mask_file: Path) -> Path:
    model = loaded.config.model
    return write_prediction_seg(
        mask_file,
        record["image"],
        series=record.get("series") or None,
        classes=loaded.classes,
        arch=str(model.arch),
        weights=str(model.weights),
        run_name=loaded.run.path.name,
    )


def write_prediction_seg(
    mask_file: str | Path,
    source: str | Path,
    *,
    classes: list[str],
    arch: str,
    weights: str,
    run_name: str = "",
    series: str | None = None,
) -> Path:
    """The DICOM SEG of a predicted NIfTI mask, written next to it as ``<name>_seg.dcm``.

    The mask (on the source's grid, as :func:`predict` writes it) is mapped onto each source frame by world
    position; the SEG (BINARY, one segment per foreground class, algorithm "medtl" with version ``"<arch>
    <weights>"``) references every instance of the source series.

    Args:
        mask_file: ``<name>_mask.nii.gz``.
        source: the DICOM series (folder or file) the mask was predicted for.
        classes: the run's classes (index 0 the background).
        arch, weights: the run's architecture and weight source (the algorithm identification).
        run_name: the run folder's name (an algorithm parameter).
        series: the series read from a folder holding several.

    Raises:
        DataLoadError: the source is not DICOM, or the mask is not on its grid; highdicom is missing.
    """
    import nibabel as nib

    from medtl.io.dicom_seg import write_dicom_seg

    mask_file = Path(mask_file)
    nifti = nib.load(str(mask_file))
    data = np.asarray(nifti.dataobj).astype(np.int64)
    name = mask_file.name.removesuffix(".nii.gz").removesuffix(".nii").removesuffix("_mask") + "_seg.dcm"
    params = {"arch": arch, "weights": weights} | ({"run": run_name} if run_name else {})
    return write_dicom_seg(
        data,
        nifti.affine,
        source,
        mask_file.with_name(name),
        classes=classes,
        series=series,
        algorithm_version=f"{arch} {weights}",
        algorithm_parameters=params,
        series_description=f"medtl {arch} {weights}",
    )


def evaluate(
    run_dir: str | Path, manifest: str | Path, *, out: str | Path | None = None, allow_seen: bool = False
) -> dict[str, Any]:
    """Per-scan metrics of a run on a labelled manifest.

    Rows of patients the run trained or validated on would inflate the metrics: they are refused, or with
    ``allow_seen`` scored apart (``result["seen"]``) while the headline metrics cover unseen patients only.

    A segmentation run is scored on a manifest with ``image``, a mask column (``segmentation.mask_column``: NIfTI
    label maps or DICOM SEG) and ``patient_id`` (a ``label`` column is optional): see
    :func:`evaluate_segmentation`.

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "auroc", "f1", "confusion_matrix", "classes", "seen"}``; with
        ``out``, every row's prediction is written there as CSV, with a ``split`` column (train, val, test or new).
        Segmentation: see :func:`evaluate_segmentation`.

    Raises:
        TrainingError: the manifest has no rows, or holds rows of the run's training/validation patients.
    """
    loaded = load_run(run_dir)
    if loaded.task.name == "segmentation":
        return evaluate_segmentation(loaded, manifest, out=out, allow_seen=allow_seen)
    if out is not None:
        _check_output_file(Path(out), [Path(manifest)])
    records, _ = records_from_inputs([manifest], loaded.classes)
    where = _splits_of(loaded, records, manifest, allow_seen)
    scores, targets, ids = predict_dataset(
        loaded.model,
        eval_dataset(loaded.config, loaded.pipeline, records),
        loaded.task,
        batch_size=loaded.config.train.batch_size,
        device=inference_device(),
    )
    if out is not None:
        rows = loaded.task.prediction_rows(records, scores, ids, with_labels=True)
        for row, sid in zip(rows, ids.tolist(), strict=True):
            row["split"] = where[sid]
        write_prediction_csv(Path(out), loaded.task.prediction_columns(with_labels=True) + ["split"], rows)
    group = [where[i] for i in ids.tolist()]
    unseen = torch.tensor([g not in ("train", "val") for g in group])
    result = loaded.task.metrics(scores[unseen], targets[unseen]) | {"classes": loaded.classes, "seen": {}}
    for split in ("train", "val"):
        sel = torch.tensor([g == split for g in group])
        if bool(sel.any()):
            result["seen"][split] = loaded.task.metrics(scores[sel], targets[sel])
    return result


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
    from medtl.train.experiment import attach_masks

    path = Path(manifest)
    records = Manifest.from_csv(path, labels_required=False).to_dicts()
    seg = loaded.config.segmentation
    attach_masks(records, path, seg.mask_column if seg is not None else "mask")
    return records


def evaluate_segmentation(
    run: str | Path | LoadedRun,
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    allow_seen: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Dice, HD95 and surface Dice of a segmentation run on a manifest of images and reference masks.

    Each scan goes through the run's own preprocessing and sliding-window inference, and is scored per foreground
    class on the preprocessed grid as in training (:class:`~medtl.train.segmentation.SegmentationTask`: both masks
    empty = Dice 1, HD95 0; one empty = Dice 0, HD95 undefined). Patients the run trained or validated on are
    refused, or with ``allow_seen`` scored apart.

    Args:
        run: a finished segmentation run folder (or a loaded run).
        manifest: CSV with ``image``, the run's mask column (NIfTI label maps or DICOM SEG) and ``patient_id``.
        out: write the per-scan rows here as CSV (the columns of the run's ``predictions_test.csv`` and ``split``),
            and the per-patient means next to it, ``<stem>_patients.csv``.
        allow_seen: score the run's own training/validation patients separately instead of refusing.
        device: default cuda when available.

    Returns:
        The overall means over unseen scans (``n``, ``dice``, ``hd95``, ``surface_dice``, per class
        ``<metric>_<class>``, ``hd95_undefined``, and the task's per-patient means where it gives them), plus
        ``task``, ``classes``, ``n_patients``, ``patient_mean`` (the means of the per-patient rows' columns),
        ``scans`` (per-scan rows), ``patients`` (per-patient rows: ``patient_id`` (pseudonym), ``n_scans`` and
        the mean of each per-scan column) and ``seen`` (split -> means of the seen patients' scans).

    Raises:
        TrainingError: not a segmentation run; no rows; rows of seen patients without ``allow_seen``.
        ManifestError: a missing mask column or file.
    """
    from medtl.data.dataset import SegmentationDataset

    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.task.name != "segmentation":
        raise TrainingError(f"run {loaded.run.path} does not segment", fix="use evaluate for classification runs")
    if out is not None:
        _check_output_file(Path(out), [Path(manifest)])
        _check_output_file(_patients_csv(Path(out)), [Path(manifest)])
    task = loaded.task
    records = _segmentation_records(loaded, manifest)
    where = _splits_of(loaded, records, manifest, allow_seen)
    dataset = SegmentationDataset(records, loaded.pipeline, train=False, cache="none")
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
        "task": "segmentation",
        "classes": list(task.classes),
        "n_patients": len(patients),
        "patient_mean": {c: _nanmean([p[c] for p in patients]) for c in metric_columns},
        "scans": rows,
        "patients": patients,
        "seen": {},
    }
    for split in ("train", "val"):
        sel = torch.tensor([g == split for g in group], dtype=torch.bool)
        if bool(sel.any()):
            result["seen"][split] = task.metrics(scores[sel], targets[sel])
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
