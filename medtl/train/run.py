"""``fine_tune(config)``: one training run from a config to a run directory.

Run directory layout::

    config.yaml            resolved config (defaults filled in, absolute paths)
    splits.csv             patient_id, split, label, used (1: in the training subset of label_fraction)
    preprocessing.json     what the transforms were built from (modality, mode, size, normalisation...)
    metrics.csv            one row per epoch: epoch, time_s, train_loss, val_loss, val_accuracy,
                           val_balanced_accuracy, val_auroc, val_f1, lr
    best.ckpt, last.ckpt   Lightning checkpoints (atomic writes); best by ``train.monitor``
    predictions_val.csv    per scan: image, patient_id, label, prob_<class>..., pred
    predictions_test.csv   the same for the test split (absent without test patients)
    load_report.json       what the weights loader matched, adapted and left random
    model_card.md          data, weights provenance, preprocessing, training, metrics
    result.json            status, metrics {val, test}, seconds, best_epoch, weights provenance...
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import math
import os
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.config import ExperimentConfig, config_to_yaml, load_config
from medtl.data.dataset import SampleDataset
from medtl.data.splits import (
    check_no_leakage,
    label_fraction_patients,
    make_splits,
    patient_labels,
    read_splits_csv,
    write_splits_csv,
)
from medtl.errors import ConfigError, ManifestError, MedtlError, TrainingError
from medtl.transforms.presets import Pipeline, build_pipeline, modality_from_meta
from medtl.utils import atomic_write_bytes, medtl_home

__all__ = [
    "RunResult",
    "Experiment",
    "prepare_experiment",
    "fine_tune",
    "resolve_precision",
    "make_loader",
    "predict_dataset",
    "write_predictions",
]

log = logging.getLogger(__name__)

RUN_DIR_ENV = "MEDTL_RUN_DIR"


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        run_dir: the run directory.
        metrics: ``{"val": {...}, "test": {...}}`` per-scan metrics of the best checkpoint.
        best_checkpoint: path of best.ckpt.
        model: the trained backbone (best weights), on the CPU, in eval mode (None on non-zero DDP ranks).
        seconds: wall-clock seconds of training and evaluation.
        best_epoch: 1-based epoch of the best checkpoint.
        status: ``ok``.
    """

    run_dir: Path
    metrics: dict[str, dict[str, Any]]
    best_checkpoint: Path
    model: Any
    seconds: float
    best_epoch: int | None = None
    status: str = "ok"


@dataclass
class Experiment:
    """Everything a run needs before training: data, splits, transforms, datasets."""

    config: ExperimentConfig
    classes: list[str]
    records: list[dict[str, Any]]
    assignment: dict[str, str]
    train_patients: list[str]
    splits: dict[str, list[dict[str, Any]]]
    pipeline: Pipeline
    modality: str
    mode: str
    scan_dims: int
    scan_channels: int
    datasets: dict[str, SampleDataset] = field(default_factory=dict)

    def preprocessing(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "mode": self.mode,
            "scan_dims": self.scan_dims,
            "scan_channels": self.scan_channels,
            "in_channels": self.pipeline.in_channels,
            "model_spatial_dims": self.pipeline.model_spatial_dims,
            "normalization": self.pipeline.normalization.to_dict(),
            "classes": self.classes,
            "description": self.pipeline.description,
        }


def _is_rank_zero_env() -> bool:
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on a CUDA GPU, 32-true otherwise."""
    if precision == "auto":
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return "bf16-mixed" if gpu else "32-true"
    return "32-true" if precision == "32" else precision


def _load_manifest(cfg: ExperimentConfig) -> Any:
    from medtl.data import Manifest

    kwargs: dict[str, Any] = {"classes": cfg.data.classes}
    params = inspect.signature(Manifest.from_csv).parameters
    if cfg.data.label_column != "label":
        if "label_column" not in params:
            raise ConfigError(
                f"data.label_column {cfg.data.label_column!r}: this version reads labels from the 'label' column only; "
                "rename the column in the manifest"
            )
        kwargs["label_column"] = cfg.data.label_column
    manifest = Manifest.from_csv(cfg.data.manifest, **kwargs)
    if len(manifest) == 0:
        raise ManifestError(
            f"manifest {cfg.data.manifest} has no rows", path=str(cfg.data.manifest), fix="add one row per scan"
        )
    return manifest


def _first_scan_info(record: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    from medtl.io import read_scan

    try:
        img = read_scan(record["image"], record.get("series") or None)
    except MedtlError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(f"cannot read {record['image']} (manifest row {record.get('row')}): {exc}") from exc
    meta = dict(getattr(img, "meta", {}) or {})
    return img.ndim - 1, int(img.shape[0]), meta


def prepare_experiment(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    splits_file: str | Path | None = None,
    build_datasets: bool = True,
) -> Experiment:
    """Read the manifest, split by patient, build transforms and datasets.

    Args:
        config: the experiment config (or anything :func:`~medtl.config.load_config` takes).
        splits_file: reuse this splits.csv (a resumed run reuses its own); default ``config.splits.file``.
        build_datasets: also build (and cache) the train/val/test datasets.

    Raises:
        ManifestError: empty or invalid manifest. TrainingError: a class has no training patients, no
            validation patients, patients crossing splits.
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    manifest = _load_manifest(cfg)
    classes = list(manifest.classes)
    if len(classes) < 2:
        raise TrainingError(
            f"manifest {cfg.data.manifest} has a single class {classes}; classification needs two or more"
        )
    records = manifest.to_dicts()
    sf = splits_file or cfg.splits.file
    if sf is not None:
        assignment = read_splits_csv(sf)
    else:
        s = cfg.splits
        assignment = make_splits(
            records,
            seed=s.seed,
            val_fraction=s.val_fraction,
            test_fraction=s.test_fraction,
            folds=s.folds,
            fold=s.fold,
        )
    check_no_leakage(records, assignment)
    plabels = patient_labels(records)
    all_train = sorted(p for p, s in assignment.items() if s == "train" and p in plabels)
    # classes that have no training patient at all: stop before training
    train_counts = Counter(plabels[p] for p in all_train)
    scan_counts = Counter(int(r["label"]) for r in records if assignment.get(str(r["patient_id"])) == "train")
    missing = [classes[i] for i in range(len(classes)) if scan_counts.get(i, 0) == 0]
    if missing:
        raise TrainingError(
            f"class(es) {missing} have no training patients in {cfg.data.manifest} "
            f"(training scans per class: { {classes[k]: v for k, v in sorted(scan_counts.items())} }); "
            "add scans of these classes, or lower splits.val_fraction/test_fraction"
        )
    del train_counts
    train_patients = (
        label_fraction_patients(all_train, plabels, cfg.splits.label_fraction, cfg.splits.seed)
        if cfg.splits.label_fraction < 1.0
        else all_train
    )
    chosen = set(train_patients)
    splits = {
        "train": [r for r in records if str(r["patient_id"]) in chosen],
        "val": [r for r in records if assignment.get(str(r["patient_id"])) == "val"],
        "test": [r for r in records if assignment.get(str(r["patient_id"])) == "test"],
    }
    if not splits["val"]:
        raise TrainingError(
            f"no validation patients ({len(set(plabels))} patients in {cfg.data.manifest}); "
            "raise splits.val_fraction or add val rows to the split column"
        )

    scan_dims, scan_channels, meta = _first_scan_info(records[0])
    modality = cfg.data.modality if cfg.data.modality != "auto" else modality_from_meta(meta, scan_dims)
    mode = cfg.data.mode if cfg.data.mode != "auto" else ("2d" if scan_dims == 2 else "3d")
    pipeline = build_pipeline(cfg, modality=modality, mode=mode, scan_dims=scan_dims, scan_channels=scan_channels)
    exp = Experiment(
        config=cfg,
        classes=classes,
        records=records,
        assignment=assignment,
        train_patients=train_patients,
        splits=splits,
        pipeline=pipeline,
        modality=modality,
        mode=mode,
        scan_dims=scan_dims,
        scan_channels=scan_channels,
    )
    if build_datasets:
        for name, recs in splits.items():
            if recs:
                exp.datasets[name] = make_dataset(exp, recs, train=name == "train")
    return exp


def make_dataset(
    exp: Experiment, records: list[dict[str, Any]], *, train: bool, cache: str | None = None
) -> SampleDataset:
    cfg = exp.config
    cache = cache or cfg.train.cache
    return SampleDataset(
        records,
        exp.pipeline,
        train=train,
        cache=cache,
        cache_dir=medtl_home() / "cache" / cfg.transform_key(),
        slices_per_scan=cfg.data.slices_per_scan,
        slice_margin=cfg.data.slice_margin,
        neighbor_slices=cfg.data.neighbor_slices,
        num_workers=cfg.train.num_workers,
        seed=cfg.train.seed,
    )


def make_loader(
    dataset: SampleDataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    sampler: Any = None,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A MONAI DataLoader (seeds each worker's random transforms)."""
    from monai.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=train and len(dataset) > batch_size,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def _class_balance(cfg: ExperimentConfig, ds: SampleDataset, n_classes: int) -> tuple[list[float] | None, Any]:
    counts = Counter(ds.labels)
    n = len(ds)
    weights = [n / (n_classes * max(counts.get(c, 0), 1)) for c in range(n_classes)]
    if cfg.train.class_balance == "weighted_loss":
        return weights, None
    if cfg.train.class_balance == "sampler":
        per_sample = torch.tensor([1.0 / counts[y] for y in ds.labels], dtype=torch.double)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        return None, torch.utils.data.WeightedRandomSampler(per_sample, num_samples=n, replacement=True, generator=gen)
    return None, None


def _default_run_dir(cfg: ExperimentConfig) -> Path:
    if cfg.output.name:
        return Path(cfg.output.dir) / cfg.output.name
    w = Path(cfg.model.weights).stem if ("/" in cfg.model.weights or "." in cfg.model.weights) else cfg.model.weights
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{cfg.model.arch}-{w}-{stamp}")
    base = Path(cfg.output.dir) / name
    out, i = base, 1
    while out.exists():
        out = base.with_name(f"{base.name}-{i}")
        i += 1
    return out


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic | torch.Tensor):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _clean(obj: Any) -> Any:
    """NaN -> None, so result.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _weights_provenance(cfg: ExperimentConfig, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"weights": cfg.model.weights, "arch": cfg.model.arch}
    src = getattr(model, "weight_source", None)
    if src is None:
        try:
            from medtl.weights import get_weight_source

            src = get_weight_source(cfg.model.weights)
        except Exception:  # noqa: BLE001
            src = None
    if src is not None:
        out["source"] = getattr(src, "name", cfg.model.weights)
        out["license"] = getattr(src, "license", None)
        out["citation"] = getattr(src, "citation", None)
        try:
            out["sha256"] = (getattr(src, "sha256", {}) or {}).get(cfg.model.arch)
            out["url"] = (getattr(src, "urls", {}) or {}).get(cfg.model.arch)
        except Exception:  # noqa: BLE001
            pass
        out["normalization"] = getattr(getattr(src, "normalization", None), "kind", None)
    return out


def _load_report(model: Any) -> dict[str, Any]:
    rep = getattr(model, "load_report", None)
    if rep is None:
        return {}
    d = rep.to_dict() if hasattr(rep, "to_dict") else dict(rep)
    if hasattr(rep, "summary"):
        try:
            d.setdefault("summary", rep.summary())
        except Exception:  # noqa: BLE001
            pass
    return d


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: SampleDataset,
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    precision: str = "32-true",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-scan class probabilities (slice probabilities averaged in 2.5D).

    Returns:
        ``(probs (n_scans, C), labels (n_scans,), scan_ids (n_scans,))``.
    """
    from medtl.train.metrics import aggregate_by_scan

    device = torch.device(device)
    model = model.to(device).eval()
    loader = make_loader(dataset, batch_size=batch_size, train=False, num_workers=num_workers)
    probs, labels, scans = [], [], []
    use_bf16 = device.type == "cuda" and precision.startswith("bf16")
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        probs.append(logits.float().softmax(-1).cpu())
        labels.append(torch.as_tensor(batch["label"]))
        scans.append(torch.as_tensor(batch["scan"]))
    if not probs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return aggregate_by_scan(torch.cat(probs), torch.cat(labels), torch.cat(scans))


def write_predictions(
    path: Path,
    records: list[dict[str, Any]],
    probs: torch.Tensor,
    scan_ids: torch.Tensor,
    classes: list[str],
    *,
    with_labels: bool = True,
) -> None:
    """CSV, one row per scan: image, patient_id, [label,] prob_<class>..., pred."""
    buf = io.StringIO()
    cols = ["image", "patient_id"] + (["label"] if with_labels else []) + [f"prob_{c}" for c in classes] + ["pred"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row_probs, sid in zip(probs.tolist(), scan_ids.tolist(), strict=True):
        r = records[sid]
        line = [r["image"], r.get("patient_id", "")]
        if with_labels:
            line.append(r.get("label_name", classes[int(r["label"])] if r.get("label") is not None else ""))
        line += [f"{p:.6f}" for p in row_probs]
        line.append(classes[int(np.argmax(row_probs))])
        w.writerow(line)
    atomic_write_bytes(path, buf.getvalue().encode())


def _model_card(
    exp: Experiment,
    run_dir: Path,
    metrics: dict[str, dict[str, Any]],
    provenance: dict[str, Any],
    load_report: dict[str, Any],
    best_epoch: int | None,
    seconds: float,
    epochs_run: int,
) -> str:
    cfg = exp.config
    plabels = patient_labels(exp.records)

    def split_line(name: str) -> str:
        recs = exp.splits[name]
        pats = {str(r["patient_id"]) for r in recs}
        per_class = Counter(exp.classes[int(r["label"])] for r in recs)
        return (
            f"| {name} | {len(pats)} | {len(recs)} | "
            + ", ".join(f"{k}: {v}" for k, v in sorted(per_class.items()))
            + " |"
        )

    lines = [
        f"# Model card: {cfg.model.arch} ({cfg.model.weights}) on {Path(cfg.data.manifest).name}",
        "",
        f"Run `{run_dir.name}`, trained {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{epochs_run} epoch(s), {seconds:.0f} s. Research use only: not a medical device.",
        "",
        "## Data",
        f"- Manifest: `{cfg.data.manifest}` ({len(exp.records)} scans, {len(plabels)} patients; classes {exp.classes})",
        f"- Modality {exp.modality}, mode {exp.mode}. Splits by patient (seed {cfg.splits.seed}); "
        f"label fraction {cfg.splits.label_fraction:g} of the training patients.",
        "",
        "| split | patients | scans | scans per class |",
        "|---|---|---|---|",
        split_line("train"),
        split_line("val"),
        split_line("test"),
        "",
        "## Weights",
        f"- Architecture `{cfg.model.arch}`, weights `{cfg.model.weights}`"
        + (f" (source `{provenance.get('source')}`)" if provenance.get("source") else ""),
        f"- Licence: {provenance.get('license') or 'n/a'}",
        f"- Citation: {provenance.get('citation') or 'n/a'}",
        f"- SHA-256: {provenance.get('sha256') or 'n/a'}",
        f"- Load report: {load_report.get('summary', 'n/a')}",
        "",
        "## Preprocessing",
    ]
    for k, v in exp.pipeline.description.items():
        lines.append(f"- {k}: {v}")
    t = cfg.train
    lines += [
        "",
        "## Training",
        f"- Schedule {cfg.resolved_schedule()} (freeze_epochs {t.freeze_epochs}, lr {t.lr:g}, lr_mult {t.lr_mult:g}), "
        f"{t.epochs} epochs planned, batch {t.batch_size}, precision {resolve_precision(t.precision, t.accelerator)}, "
        f"devices {t.devices}, seed {t.seed}, class balance {t.class_balance}.",
        f"- Best epoch (by {t.monitor}): {best_epoch}",
        "",
        "## Metrics (per scan, best checkpoint)",
        "",
        "| split | n | accuracy | balanced accuracy | AUROC | F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("val", "test"):
        m = metrics.get(name) or {}
        if not m:
            lines.append(f"| {name} | 0 | - | - | - | - |")
            continue

        def f(k: str, m: dict[str, Any] = m) -> str:
            v = m.get(k)
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

        lines.append(
            f"| {name} | {m.get('n', 0)} | {f('accuracy')} | {f('balanced_accuracy')} | {f('auroc')} | {f('f1')} |"
        )
    return "\n".join(lines) + "\n"


def fine_tune(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    quiet: bool = False,
) -> RunResult:
    """Train one model as the config says and write a run directory.

    Args:
        config: a config file, dict or :class:`~medtl.config.ExperimentConfig`.
        run_dir: where to write (default ``output.dir/output.name`` or a timestamped folder).
        resume: continue the run in ``run_dir`` from its last.ckpt (its splits.csv is reused).
        overrides: dotted-key overrides (``{"train.epochs": 3}``).
        callbacks: extra Lightning callbacks.
        quiet: no progress output.

    Returns:
        A :class:`RunResult`.

    Raises:
        ConfigError, ManifestError, TrainingError, DataLoadError, WeightsError: see their messages.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from medtl.train.callbacks import AtomicCheckpointIO, MetricsCSV, PlainProgress
    from medtl.train.module import ClassifierModule

    t_start = time.perf_counter()
    cfg = load_config(config, overrides)
    rank0 = _is_rank_zero_env()
    if run_dir is None and not rank0 and os.environ.get(RUN_DIR_ENV):
        run_dir = os.environ[RUN_DIR_ENV]
    if (
        run_dir is None
        and cfg.output.name is None
        and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
        and not os.environ.get(RUN_DIR_ENV)
    ):
        # torchrun / SLURM start every process at once: a timestamped folder would differ between them
        raise ConfigError(
            "set output.name (or --name) when launching with torchrun or SLURM, so every process writes the same run"
        )
    if resume and run_dir is None:
        raise TrainingError("resume needs the run directory to continue", fix="pass --resume RUN_DIR")
    run_dir = Path(run_dir) if run_dir is not None else _default_run_dir(cfg)
    last_ckpt = run_dir / "last.ckpt"
    splits_file = None
    if resume:
        if not last_ckpt.is_file():
            raise TrainingError(
                f"cannot resume {run_dir}: it has no last.ckpt (the run stopped before its first epoch ended)",
                path=str(run_dir),
                fix="start a new run instead",
            )
        splits_file = run_dir / "splits.csv"
    elif rank0 and (last_ckpt.exists() or (run_dir / "result.json").exists()):
        raise TrainingError(
            f"run directory {run_dir} already holds a run",
            path=str(run_dir),
            fix="pass --resume to continue it, or choose another output.name",
        )
    if not rank0 and splits_file is None and (run_dir / "splits.csv").is_file():
        splits_file = run_dir / "splits.csv"  # DDP workers use exactly the splits rank 0 wrote
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())

    if not quiet and rank0:
        print(f"run directory: {run_dir}", flush=True)
    if rank0:
        _write_json(run_dir / "result.json", {"status": "running", "run_dir": str(run_dir)})
    try:
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
        exp = prepare_experiment(cfg, splits_file=splits_file)
        plabels = patient_labels(exp.records)
        if rank0:
            atomic_write_bytes(run_dir / "config.yaml", config_to_yaml(cfg).encode())
            write_splits_csv(
                run_dir / "splits.csv",
                exp.assignment,
                {p: exp.classes[lab] for p, lab in plabels.items()},
                used=exp.train_patients,
            )
            _write_json(run_dir / "preprocessing.json", exp.preprocessing())

        train_ds, val_ds = exp.datasets["train"], exp.datasets["val"]
        class_weights, sampler = _class_balance(cfg, train_ds, len(exp.classes))
        accelerator = {"cuda": "gpu"}.get(cfg.train.accelerator, cfg.train.accelerator)
        precision = resolve_precision(cfg.train.precision, accelerator)
        on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
        schedule = cfg.resolved_schedule()
        module = ClassifierModule(
            arch=cfg.model.arch,
            weights=cfg.model.weights,
            in_channels=exp.pipeline.in_channels,
            num_classes=len(exp.classes),
            spatial_dims=exp.pipeline.model_spatial_dims,
            schedule=schedule,
            epochs=cfg.train.epochs,
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            freeze_epochs=cfg.train.freeze_epochs,
            lr_mult=cfg.train.lr_mult,
            unfreeze_lr_factor=cfg.train.unfreeze_lr_factor,
            pct_start=cfg.train.pct_start,
            class_weights=class_weights,
            label_smoothing=cfg.train.label_smoothing,
            precise_bn_batches=cfg.train.precise_bn_batches,
        )
        load_report = _load_report(module.model)
        provenance = _weights_provenance(cfg, module.model)
        if rank0:
            _write_json(run_dir / "load_report.json", load_report)

        train_loader = make_loader(
            train_ds,
            batch_size=cfg.train.batch_size,
            train=True,
            num_workers=cfg.train.num_workers,
            sampler=sampler,
            pin_memory=on_gpu,
        )
        val_loader = make_loader(
            val_ds, batch_size=cfg.train.batch_size, train=False, num_workers=cfg.train.num_workers, pin_memory=on_gpu
        )
        mode = "min" if cfg.train.monitor == "val_loss" else "max"
        metrics_cb = MetricsCSV(run_dir / "metrics.csv")
        # best.ckpt: weights only (what predict needs); last.ckpt: full state (optimizer, schedule) for --resume
        ckpt_cb = ModelCheckpoint(
            dirpath=run_dir,
            filename="best",
            monitor=cfg.train.monitor,
            mode=mode,
            save_top_k=1,
            save_weights_only=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        last_cb = ModelCheckpoint(  # no monitor, top 1: the latest epoch, under a fixed name
            dirpath=run_dir, filename="last", save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False
        )
        cbs: list[Any] = [metrics_cb, ckpt_cb, last_cb]
        if cfg.train.patience:
            cbs.append(EarlyStopping(monitor=cfg.train.monitor, mode=mode, patience=cfg.train.patience))
        tty = sys.stdout.isatty() and not quiet
        if tty:
            cbs.append(RichProgressBar())
        elif not quiet:
            cbs.append(PlainProgress(metrics_cb))
        cbs += list(callbacks or [])
        n_dev = cfg.train.devices * cfg.train.num_nodes
        strategy: Any = "auto"
        if n_dev > 1:
            from lightning.pytorch.strategies import DDPStrategy

            # frozen groups have no gradients in the first phase: DDP must not wait for them
            strategy = DDPStrategy(find_unused_parameters=schedule == "fine_tune")
        logger: Any = False
        try:
            import tensorboard  # noqa: F401
            from lightning.pytorch.loggers import TensorBoardLogger

            logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
        except ImportError:
            pass
        # the run directory holds config and splits before the first checkpoint, by design
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # validation metrics are computed from predictions gathered over all ranks: identical on every rank
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            strategy=strategy,
            precision=precision,
            max_epochs=cfg.train.epochs,
            callbacks=cbs,
            plugins=[AtomicCheckpointIO()],
            logger=logger,
            default_root_dir=str(run_dir),
            enable_progress_bar=tty,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            limit_train_batches=cfg.train.limit_train_batches,
            deterministic=cfg.train.deterministic,
        )
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last_ckpt) if resume else None)
        if not trainer.is_global_zero:
            return RunResult(run_dir, {}, run_dir / "best.ckpt", None, time.perf_counter() - t_start, status="worker")

        best_path = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else run_dir / "best.ckpt"
        if not best_path.is_file():
            best_path = last_ckpt
        state = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        model = module.model.cpu().eval()
        rows = metrics_cb.rows
        best_epoch = None
        key = cfg.train.monitor
        scored = [r for r in rows if isinstance(r.get(key), float) and not math.isnan(r[key])]
        if scored:
            best = (min if mode == "min" else max)(scored, key=lambda r: r[key])
            best_epoch = int(best["epoch"])
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
        metrics: dict[str, dict[str, Any]] = {}
        from medtl.train.metrics import classification_metrics

        for split in ("val", "test"):
            recs = exp.splits[split]
            if not recs:
                metrics[split] = {}
                continue
            ds = exp.datasets[split]
            probs, labels, ids = predict_dataset(
                model, ds, batch_size=cfg.train.batch_size, device=device, precision=precision
            )
            metrics[split] = classification_metrics(probs, labels, len(exp.classes))
            write_predictions(run_dir / f"predictions_{split}.csv", recs, probs, ids, exp.classes)
        model = model.cpu()
        seconds = time.perf_counter() - t_start
        epochs_run = len(rows)
        result = {
            "status": "ok",
            "run_dir": str(run_dir),
            "metrics": metrics,
            "seconds": seconds,
            "train_seconds": rows[-1]["time_s"] if rows else None,
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "epochs_planned": cfg.train.epochs,
            "stopped_early": epochs_run < cfg.train.epochs,
            "monitor": cfg.train.monitor,
            "classes": exp.classes,
            "arch": cfg.model.arch,
            "weights": provenance,
            "schedule": schedule,
            "seed": cfg.train.seed,
            "split_seed": cfg.splits.seed,
            "label_fraction": cfg.splits.label_fraction,
            "n_patients": {s: len({str(r["patient_id"]) for r in exp.splits[s]}) for s in ("train", "val", "test")},
            "n_scans": {s: len(exp.splits[s]) for s in ("train", "val", "test")},
            "precision": precision,
            "devices": cfg.train.devices,
            "modality": exp.modality,
            "mode": exp.mode,
            "best_checkpoint": str(best_path),
        }
        atomic_write_bytes(
            run_dir / "model_card.md",
            _model_card(exp, run_dir, metrics, provenance, load_report, best_epoch, seconds, epochs_run).encode(),
        )
        _write_json(run_dir / "result.json", _clean(result))
        if not quiet:
            v, te = metrics.get("val", {}), metrics.get("test", {})
            print(
                f"done in {seconds:.1f}s: val AUROC {v.get('auroc', float('nan')):.3f}"
                + (f", test AUROC {te.get('auroc', float('nan')):.3f}" if te else "")
                + f"; results in {run_dir}",
                flush=True,
            )
        return RunResult(run_dir, metrics, best_path, model, seconds, best_epoch)
    except BaseException as exc:
        if rank0:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
            _write_json(
                run_dir / "result.json",
                {
                    "status": status,
                    "run_dir": str(run_dir),
                    "error": f"{type(exc).__name__}: {exc}",
                    "error_type": type(exc).__name__,
                    "traceback": traceback.format_exc(limit=20) if not isinstance(exc, MedtlError) else None,
                    "seconds": time.perf_counter() - t_start,
                },
            )
        raise
