"""Predict with a finished run, using the run's own preprocessing (scoring: :mod:`medtl.train.scoring`).

A classification run predicts class probabilities per scan (a CSV); a segmentation run predicts one NIfTI label
map per scan on the scan's own grid (and, with ``dicom_seg``, a DICOM SEG referencing the source series).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.errors import DataLoadError, MedtlError, RunDirError, TrainingError
from medtl.io.output import check_not_an_input
from medtl.rundir import RunDir, write_prediction_csv
from medtl.tasks.base import Task
from medtl.train.inference import inference_device, predict_dataset, records_from_inputs
from medtl.transforms.record import InputRecord

__all__ = [
    "LoadedRun",
    "load_run",
    "default_output",
    "input_paths",
    "predict",
    "predict_rows",
    "predict_masks",
    "write_prediction_seg",
]

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A trained run ready to predict: its folder, config, task, input record, pipeline and model (eval mode)."""

    run: RunDir
    config: Any
    task: Task
    pipeline: Any
    model: torch.nn.Module
    preprocessing: dict[str, Any]
    checkpoint: Path

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    @property
    def record(self) -> InputRecord:
        """The run's input record (its preprocessing.json)."""
        return self.pipeline.record


def load_run(run_dir: str | Path, *, quiet: bool = False) -> LoadedRun:
    """Rebuild a run's model and transforms from its folder (no pretrained weights needed).

    The task, the input record and the task's state (classes, target scaling...) come from the run's
    ``preprocessing.json``; the network from ``config.yaml`` and the tested checkpoint.

    Raises:
        RunDirError: the folder is not a finished run, or a file of it is corrupt or unsafe.
    """
    from medtl.models import create_model
    from medtl.tasks import task_class
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
    record = InputRecord.from_dict(pre, source=str(run.file(RunDir.PREPROCESSING)))
    task_cls = task_class(str(pre.get("task") or "classification"))
    pipeline = task_cls.build_pipeline(cfg, record)
    task = task_cls.from_state(cfg, pre, pipeline)
    model = create_model(
        cfg.model.arch,
        weights="scratch",
        in_channels=record.in_channels,
        num_classes=task.num_outputs,
        spatial_dims=record.model_spatial_dims,
        **task.model_options(cfg),
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
    """Where ``medtl predict`` writes without ``--out``: the run's task says (``predictions.csv`` for a
    classification run, the folder ``masks`` for a segmentation run)."""
    from medtl.tasks import task_class

    try:
        task = task_class(str(RunDir(run_dir).read_preprocessing().get("task") or "classification"))
    except (MedtlError, OSError, ValueError):
        return Path("predictions.csv")  # predict itself says what is wrong with the folder
    return Path(task.default_output)


def predict(
    run_dir: str | Path,
    inputs: list[str | Path] | str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Predictions of a finished run for new scans, with the run's own preprocessing (:meth:`Task.predict
    <medtl.tasks.base.Task.predict>` of the run's task).

    Args:
        run_dir: a finished run folder.
        inputs: scan files, DICOM folders, NIfTI files, or manifest CSVs.
        out: classification, multi-label, regression: write a CSV (image, patient_id, [label,] the task's
            prediction columns) here. Segmentation (required): a folder that receives one NIfTI label map per scan,
            ``<name>_mask.nii.gz``, on the scan's own grid and affine.
        batch_size: default the run's.
        device: default cuda when available.
        options: options of one task. Segmentation: ``dicom_seg=True`` also writes ``<name>_seg.dcm``, a DICOM SEG
            (BINARY, one segment per foreground class) referencing the source series' instances; by default the SEG
            is for the source's own archive: it carries the source's patient and study modules (name, ID, birth
            date...), as DICOM requires for it to file with its study; StudyDescription is scrubbed of the
            patient's identifiers. ``deidentify=True`` (with ``dicom_seg``) writes each SEG pseudonymised instead:
            PatientID and PatientName are medtl's keyed pseudonym, birth date, sex, age, accession number and study
            date empty, the rest of the patient and study modules removed; the UIDs stay, so the SEG still
            references its source (see :mod:`medtl.io.dicom_seg_write`).

    Returns:
        One dict per scan: the CSV's columns; segmentation, ``image``, ``mask_file``, voxel counts per class (and
        ``seg_file``).

    Raises:
        DataLoadError: an input is not the kind of scan the run was trained on (dimensions, channels, modality);
            ``dicom_seg`` with a non-DICOM input.
        TrainingError: an option of another task (``dicom_seg`` on a classification run); ``deidentify`` without
            ``dicom_seg``.
    """
    loaded = load_run(run_dir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    given = {k: v for k, v in options.items() if v not in (None, False)}
    foreign = [k for k in given if k not in loaded.task.predict_options]
    if foreign:
        flag = "--" + foreign[0].replace("_", "-")
        raise TrainingError(
            f"run {loaded.run.path} is a {loaded.task.name} run: {flag} does not apply to it", fix=f"leave out {flag}"
        )
    return loaded.task.predict(
        loaded, list(inputs), None if out is None else Path(out), batch_size=batch_size, device=device, options=given
    )


def predict_rows(
    loaded: LoadedRun,
    inputs: list[str | Path],
    out: Path | None,
    *,
    batch_size: int | None = None,
    device: str | None = None,
    saliency: str | bool | None = None,
    saliency_class: str | None = None,
) -> list[dict[str, Any]]:
    """Per-scan predictions of a run whose task gives one row of values per scan, optionally written as a CSV.

    With ``saliency`` (a method of :data:`~medtl.train.saliency.SALIENCY_METHODS`, or True for Grad-CAM), also a
    folder ``saliency/`` next to the CSV with ``<scan>_saliency.nii.gz`` (the map on the scan's own grid) and
    ``<scan>_saliency.png`` per scan (:func:`~medtl.train.saliency.write_saliency`), each of the predicted class or of
    ``saliency_class``; each row then also holds ``saliency_class``, ``saliency_file`` and ``saliency_png`` (not
    written to the CSV).
    """
    method = _saliency_options(loaded, out, saliency, saliency_class)
    if out is not None:
        _check_output_file(Path(out))
    records, labelled = records_from_inputs(list(inputs), loaded.task.read_labelled)
    if out is not None:
        check_not_an_input(
            [(out, f"--out {out}")],
            input_paths(inputs, records),
            run_dir=loaded.run.path,
            fix="give another file name as --out",
        )
    scores, _, ids = predict_dataset(
        loaded.model,
        loaded.task.eval_dataset(loaded.config, loaded.pipeline, records),
        loaded.task,
        batch_size=batch_size or loaded.config.train.batch_size,
        device=inference_device(device),
    )
    rows = loaded.task.prediction_rows(records, scores, ids, with_labels=labelled)
    if out is not None:
        write_prediction_csv(Path(out), loaded.task.prediction_columns(with_labels=labelled), rows)
    if method is not None and out is not None:
        from medtl.train.saliency import write_saliency

        maps = write_saliency(
            loaded.model,
            loaded.task,
            loaded.config,
            loaded.pipeline,
            [records[int(i)] for i in ids.tolist()],
            Path(out).parent / SALIENCY_DIR,
            method=method,
            target=saliency_class,
            device=inference_device(device),
        )
        for row, extra in zip(rows, maps, strict=True):
            row.update({k: v for k, v in extra.items() if k != "image"})
    return rows


#: The folder ``predict --saliency`` writes next to the predictions CSV.
SALIENCY_DIR = "saliency"


def _saliency_options(
    loaded: LoadedRun, out: Path | None, saliency: str | bool | None, saliency_class: str | None
) -> str | None:
    """The saliency method asked for (None: no maps), checked before any scan is read: a known method, a class of
    the run, an output file to write the folder beside, a 2D or 3D run.

    Raises:
        TrainingError: ``saliency_class`` without ``saliency``; maps without ``out``; a 2.5D run.
        UnknownOptionError: an unknown method or class (with the closest one).
    """
    from medtl.train.saliency import SALIENCY_METHODS, native_transforms
    from medtl.utils import look_up_option

    if saliency in (None, False):
        if saliency_class is not None:
            raise TrainingError(
                "--saliency-class names the class a saliency map explains, but no map is asked for",
                fix="add --saliency",
            )
        return None
    method = (
        SALIENCY_METHODS[0]
        if saliency is True
        else look_up_option(str(saliency), SALIENCY_METHODS, what="saliency method")
    )
    if saliency_class is not None:
        look_up_option(saliency_class, loaded.classes, what="class")
    if out is None:
        raise TrainingError("saliency maps are written next to the predictions CSV: give out=", fix="pass --out FILE")
    native_transforms(loaded.config, loaded.record)  # refuses a 2.5D run now, not after the predictions
    return method


def predict_masks(
    loaded: LoadedRun,
    inputs: list[str | Path],
    out: str | Path | None,
    device: str | None,
    *,
    dicom_seg: bool = False,
    deidentify: bool = False,
) -> list[dict[str, Any]]:
    """A segmentation run's predict: one NIfTI label map per scan in the folder ``out``, on the scan's grid (and a
    DICOM SEG per scan with ``dicom_seg``; ``deidentify``, only with ``dicom_seg``: a pseudonymised SEG)."""
    from medtl.train.seg_inference import mask_names, segment_scans
    from medtl.transforms.segmentation import build_inference_transforms

    if deidentify and not dicom_seg:
        raise TrainingError(
            "--deidentify applies to the DICOM SEG that --dicom-seg writes (the NIfTI masks and CSVs hold no patient "
            "data)",
            fix="add --dicom-seg, or leave out --deidentify",
        )
    if out is None:
        raise TrainingError(
            f"run {loaded.run.path} segments: predict needs an output folder for the masks", fix="pass --out DIR"
        )
    _check_output_folder(Path(out))
    transforms = build_inference_transforms(loaded.config, loaded.record)
    records, _ = records_from_inputs(list(inputs), _unlabelled_rows)
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
    folder = Path(out)
    names = mask_names([str(r["image"]) for r in records])
    outputs = [(folder, f"--out {out}")]
    for r, name in zip(records, names, strict=True):
        outputs.append((folder / name, f"the mask of {r['image']} ({folder / name})"))
        if dicom_seg:
            seg = folder / (name.removesuffix("_mask.nii.gz") + "_seg.dcm")
            outputs.append((seg, f"the DICOM SEG of {r['image']} ({seg})"))
    # every file this predict writes, checked before the first scan is segmented
    check_not_an_input(
        outputs, input_paths(inputs, records), run_dir=loaded.run.path, fix="give another folder as --out"
    )
    rows = segment_scans(
        loaded.model,
        loaded.task,  # type: ignore[arg-type]
        transforms,
        records,
        folder,
        device=inference_device(device),
        names=names,
    )
    if dicom_seg:
        for row, r in zip(rows, records, strict=True):
            row["seg_file"] = str(_write_seg(loaded, r, Path(row["mask_file"]), deidentify=deidentify))
    return rows


def _unlabelled_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a manifest given to a segmentation predict (labels optional, masks not needed)."""
    from medtl.data import Manifest

    return Manifest.from_csv(path, labels_required=False).to_dicts()


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


def _check_output_file(out: Path) -> None:
    """Refuse, before any scan is scored, an ``--out`` CSV path that cannot be written (an output that would write
    over an input is :func:`~medtl.io.output.check_not_an_input`'s, once the inputs are read).

    Raises:
        MedtlError: ``out`` is a folder, lies under a file, or its nearest existing folder is not writable.
    """
    if out.is_dir():
        raise MedtlError(
            f"--out {out} is a folder; a CSV file is written there (for a segmentation evaluate, also "
            "<name>_patients.csv next to it)",
            path=str(out),
            fix=f"give a file name, e.g. --out {out / 'scores.csv'}",
        )
    _, problem = _writable_ancestor(out.parent)
    if problem:
        raise MedtlError(
            f"cannot write {out}: {problem}", path=str(out), fix="make it writable or give another path as --out"
        )


def input_paths(inputs: Sequence[str | Path], records: Iterable[dict[str, Any]]) -> list[Path]:
    """Every file and folder a predict or evaluate reads, for :func:`~medtl.io.output.check_not_an_input`: the
    inputs given (scans, scan folders, manifests) and, for each record, its scan and every other cell that names an
    existing file (the mask, any other path column; a relative cell is taken relative to each manifest among the
    inputs, as the manifest's own paths are)."""
    given = [Path(i) for i in inputs]
    bases = [p.resolve().parent for p in given if p.suffix.lower() == ".csv"]
    paths = list(given)
    skip = {"image", "label", "label_name", "patient_id", "row", "split", "series", "scan"}
    for r in records:
        if r.get("image"):
            paths.append(Path(str(r["image"])))
        for key, cell in r.items():
            if key in skip or not isinstance(cell, str) or not cell.strip():
                continue
            named = Path(cell.strip()).expanduser()
            for candidate in [named] if named.is_absolute() else [base / named for base in bases]:
                try:
                    if candidate.is_file():
                        paths.append(candidate)
                except (OSError, ValueError):  # a cell that is no path (too long for one, NUL...)
                    pass
    return paths


def _write_seg(loaded: LoadedRun, record: dict[str, Any], mask_file: Path, *, deidentify: bool = False) -> Path:
    model = loaded.config.model
    return write_prediction_seg(
        mask_file,
        record["image"],
        series=record.get("series") or None,
        classes=loaded.classes,
        arch=str(model.arch),
        weights=str(model.weights),
        run_name=loaded.run.path.name,
        deidentify=deidentify,
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
    deidentify: bool = False,
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
        deidentify: pseudonymise the patient (see :mod:`medtl.io.dicom_seg_write`); by default the source's patient
            and study modules are copied, for the source's own archive (StudyDescription scrubbed either way).

    Raises:
        DataLoadError: the source is not DICOM, or the mask is not on its grid; highdicom is missing.
    """
    import nibabel as nib

    from medtl.io.dicom_seg_write import write_dicom_seg

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
        deidentify=deidentify,
    )
