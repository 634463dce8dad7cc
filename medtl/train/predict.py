"""Predict with a finished run, using the run's own preprocessing; evaluate it on a labelled manifest."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medtl.errors import MedtlError, NoImagesError, RunDirError, TrainingError
from medtl.train.experiment import check_pseudonyms
from medtl.train.inference import eval_dataset, inference_device, predict_dataset, records_from_inputs
from medtl.train.rundir import RunDir, write_prediction_csv
from medtl.train.segmentation import SegmentationTask
from medtl.train.task import ClassificationTask
from medtl.transforms.presets import build_pipeline
from medtl.weights.sources import Normalization

__all__ = ["LoadedRun", "load_run", "predict", "evaluate"]

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


def predict(
    run_dir: str | Path,
    inputs: list[str | Path] | str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Per-scan class probabilities for files, folders or manifests, with the run's preprocessing.

    Args:
        run_dir: a finished run folder.
        inputs: scan files, DICOM folders, NIfTI files, or manifest CSVs.
        out: write a CSV (image, patient_id, [label,] prob_<class>..., pred) here.
        batch_size: default the run's.
        device: default cuda when available.

    Returns:
        One dict per scan with the same columns as the CSV.

    Raises:
        DataLoadError: an input is not the kind of scan the run was trained on (dimensions, channels, modality).
    """
    loaded = load_run(run_dir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if loaded.task.name == "segmentation":
        return _predict_masks(loaded, list(inputs), out, device)
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
    loaded: LoadedRun, inputs: list[str | Path], out: str | Path | None, device: str | None
) -> list[dict[str, Any]]:
    """A segmentation run's predict: one NIfTI label map per scan in the folder ``out``, on the scan's grid."""
    from medtl.train.segmentation import segment_scans
    from medtl.transforms.segmentation import build_inference_transforms

    if out is None:
        raise TrainingError(
            f"run {loaded.run.path} segments: predict needs an output folder for the masks", fix="pass --out DIR"
        )
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

            records += Manifest.from_csv(p).to_dicts()
        elif not p.exists():
            raise NoImagesError(f"input {p} does not exist", path=str(p), fix="check the path")
        else:
            records.append({"image": str(p.resolve())})
    return segment_scans(loaded.model, loaded.task, transforms, records, Path(out), device=inference_device(device))  # type: ignore[arg-type]


def evaluate(
    run_dir: str | Path, manifest: str | Path, *, out: str | Path | None = None, allow_seen: bool = False
) -> dict[str, Any]:
    """Per-scan metrics of a run on a labelled manifest.

    Rows of patients the run trained or validated on would inflate the metrics: they are refused, or with
    ``allow_seen`` scored apart (``result["seen"]``) while the headline metrics cover unseen patients only.

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "auroc", "f1", "confusion_matrix", "classes", "seen"}``; with
        ``out``, every row's prediction is written there as CSV, with a ``split`` column (train, val, test or new).

    Raises:
        TrainingError: the manifest has no rows, or holds rows of the run's training/validation patients.
    """
    loaded = load_run(run_dir)
    records, _ = records_from_inputs([manifest], loaded.classes)
    if not records:
        raise TrainingError(f"manifest {manifest} has no rows to evaluate on", path=str(manifest))
    check_pseudonyms(loaded.run.path, loaded.preprocessing.get("pseudonym_check"))
    assignment = loaded.run.read_splits() if loaded.run.file(RunDir.SPLITS).is_file() else {}
    where = [assignment.get(str(r.get("patient_id")), "new") for r in records]
    seen = Counter(w for w in where if w in ("train", "val"))
    if seen and not allow_seen:
        rows = [str(r.get("row")) for r, w in zip(records, where, strict=True) if w in ("train", "val")][:8]
        raise TrainingError(
            f"manifest {manifest} holds {sum(seen.values())} row(s) of patients the run "
            f"{'/'.join(sorted(seen))} on (rows {', '.join(rows)}...): their metrics would be inflated",
            path=str(manifest),
            fix="evaluate on other patients, or pass --allow-seen to score them separately",
        )
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
