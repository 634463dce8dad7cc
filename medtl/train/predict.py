"""Predict with a finished run, using the run's own preprocessing; evaluate it on a labelled manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medtl.config import load_config
from medtl.errors import TrainingError
from medtl.transforms.presets import NormalizationSpec, build_pipeline

__all__ = ["LoadedRun", "load_run", "predict", "evaluate"]


@dataclass
class LoadedRun:
    """A trained run ready to predict: its config, classes, pipeline and model (best weights, eval mode)."""

    run_dir: Path
    config: Any
    classes: list[str]
    pipeline: Any
    model: torch.nn.Module
    preprocessing: dict[str, Any]


def load_run(run_dir: str | Path, *, checkpoint: str = "best") -> LoadedRun:
    """Rebuild a run's model and transforms from its directory (no pretrained download needed).

    Raises:
        TrainingError: the folder is not a finished medtl run.
    """
    from medtl.train.module import ClassifierModule

    run_dir = Path(run_dir)
    ckpt = run_dir / f"{checkpoint}.ckpt"
    if not ckpt.is_file():
        ckpt = run_dir / "last.ckpt"
    needed = [run_dir / "config.yaml", run_dir / "preprocessing.json"]
    missing = [p.name for p in needed if not p.is_file()] + ([] if ckpt.is_file() else ["best.ckpt"])
    if missing:
        raise TrainingError(
            f"{run_dir} is not a finished medtl run (missing {', '.join(missing)})",
            path=str(run_dir),
            fix="pass the folder `medtl train` wrote",
        )
    cfg = load_config(run_dir / "config.yaml")
    pre = json.loads((run_dir / "preprocessing.json").read_text())
    norm = NormalizationSpec(
        pre["normalization"]["kind"],
        tuple(pre["normalization"].get("mean") or ()),
        tuple(pre["normalization"].get("std") or ()),
    )
    pipeline = build_pipeline(
        cfg,
        modality=pre["modality"],
        mode=pre["mode"],
        scan_dims=pre["scan_dims"],
        scan_channels=pre["scan_channels"],
        in_channels=pre["in_channels"],
        normalization=norm,
    )
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = dict(state.get("hyper_parameters", {}))
    hp["weights"] = "scratch"  # the checkpoint holds the trained weights; no need for the pretrained file
    module = ClassifierModule(**hp)
    module.load_state_dict(state["state_dict"])
    return LoadedRun(run_dir, cfg, list(pre["classes"]), pipeline, module.model.eval(), pre)


def _records_from_inputs(inputs: list[str | Path], classes: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """Records for files/folders (one scan each) or a manifest CSV (labels kept)."""
    records: list[dict[str, Any]] = []
    labelled = True
    for inp in inputs:
        p = Path(inp)
        if p.suffix.lower() == ".csv":
            from medtl.data import Manifest

            m = Manifest.from_csv(p, classes=classes)
            records += m.to_dicts()
        else:
            if not p.exists():
                from medtl.errors import NoImagesError

                raise NoImagesError(f"input {p} does not exist", path=str(p), fix="check the path")
            labelled = False
            records.append({"image": str(p.resolve()), "label": 0, "patient_id": "", "row": None})
    return records, labelled


def _eval_dataset(run: Any, records: list[dict[str, Any]]) -> Any:
    """The run's own preprocessing (no augmentation, no cache) over ``records``."""
    from medtl.data.dataset import SampleDataset

    cfg = run.config
    return SampleDataset(
        records,
        run.pipeline,
        train=False,
        cache="none",
        slices_per_scan=cfg.data.slices_per_scan,
        slice_margin=cfg.data.slice_margin,
        neighbor_slices=cfg.data.neighbor_slices,
    )


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
        run_dir: a finished run directory.
        inputs: scan files, DICOM folders, NIfTI files, or manifest CSVs.
        out: write a CSV (image, patient_id, [label,] prob_<class>..., pred) here.
        batch_size: default the run's.
        device: default cuda when available.

    Returns:
        One dict per scan with the same columns as the CSV.
    """
    from medtl.train.run import predict_dataset, write_predictions

    run = load_run(run_dir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    records, labelled = _records_from_inputs(list(inputs), run.classes)
    cfg = run.config
    ds = _eval_dataset(run, records)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    probs, labels, ids = predict_dataset(run.model, ds, batch_size=batch_size or cfg.train.batch_size, device=dev)
    rows = []
    for pr, sid in zip(probs.tolist(), ids.tolist(), strict=True):
        r = records[sid]
        row: dict[str, Any] = {"image": r["image"], "patient_id": r.get("patient_id", "")}
        if labelled:
            row["label"] = r.get("label_name", run.classes[int(r["label"])])
        row.update({f"prob_{c}": p for c, p in zip(run.classes, pr, strict=True)})
        row["pred"] = run.classes[max(range(len(pr)), key=pr.__getitem__)]
        rows.append(row)
    if out is not None:
        write_predictions(Path(out), records, probs, ids, run.classes, with_labels=labelled)
    return rows


def evaluate(run_dir: str | Path, manifest: str | Path, *, out: str | Path | None = None) -> dict[str, Any]:
    """Per-scan metrics of a run on a labelled manifest (all of its rows).

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "auroc", "f1", "confusion_matrix"}``; with ``out``, the
        predictions are written there as CSV too.
    """
    from medtl.train.metrics import classification_metrics
    from medtl.train.run import predict_dataset, write_predictions

    run = load_run(run_dir)
    records, _ = _records_from_inputs([manifest], run.classes)
    if not records:
        raise TrainingError(f"manifest {manifest} has no rows to evaluate on", path=str(manifest))
    cfg = run.config
    ds = _eval_dataset(run, records)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    probs, labels, ids = predict_dataset(run.model, ds, batch_size=cfg.train.batch_size, device=dev)
    if out is not None:
        write_predictions(Path(out), records, probs, ids, run.classes)
    return classification_metrics(probs, labels, len(run.classes)) | {"classes": run.classes}
