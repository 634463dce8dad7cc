"""A stand-in training engine for cross-validation and for compare over folds, and the manifests they read.

Shared by tests/comparison/test_cv.py and tests/comparison/test_external.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def write_predictions(path: Path, rows: list[dict], strength: float, rng: np.random.Generator) -> None:
    """predictions_<split>.csv of a classification run: ``strength`` separates the classes (0: chance)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "patient_id", "label", "prob_negative", "prob_positive", "pred"])
        for r in rows:
            p = float(1 / (1 + np.exp(-(strength * (2 * r["label"] - 1) + rng.normal()))))
            w.writerow([r["image"], r["patient_id"], r["label_name"], f"{1 - p:.6f}", f"{p:.6f}", "x"])


class FoldEngine:
    """Stands in for medtl.train.fine_tune: writes what cv and compare read of a run folder (result.json with the
    patient counts, splits.csv, predictions_val.csv and predictions_test.csv, metrics.csv).

    Pretrained weights separate the classes better than scratch; each (weights, seed, fold) draws its own noise.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None]] = []

    def __call__(self, config, *, run_dir, quiet=False):
        from medtl.data import Manifest
        from medtl.data.splits import patient_labels, read_splits_csv, write_splits_csv

        run_dir = Path(run_dir)
        w, s, fold = str(config.model.weights), config.train.seed, config.splits.fold
        self.calls.append((w, s, fold))
        run_dir.mkdir(parents=True)
        assignment = read_splits_csv(config.splits.file)
        manifest = Manifest.from_csv(config.data.manifest)
        records = manifest.to_dicts()
        labels = patient_labels(records)
        write_splits_csv(run_dir / "splits.csv", assignment, {p: str(v) for p, v in labels.items()})
        rng = np.random.default_rng([s, fold if fold is not None else 99, sum(map(ord, w))])
        strength = 2.0 if w != "scratch" else 0.6
        for split in ("val", "test"):
            rows = [r for r in records if assignment[r["patient_id"]] == split]
            write_predictions(run_dir / f"predictions_{split}.csv", rows, strength, rng)
        with open(run_dir / "metrics.csv", "w") as fh:
            fh.write("epoch,time_s,train_loss,val_loss,val_auroc\n")
            for e in range(1, config.train.epochs + 1):
                fh.write(f"{e},{e * 1.5},0.5,0.5,{min(1, 0.5 + strength * e / 10):.4f}\n")
        counts = {sp: sum(v == sp for v in assignment.values()) for sp in ("train", "val", "test")}
        (run_dir / "load_report.json").write_text(json.dumps({"summary": f"loaded {w}"}))
        result = {"status": "ok", "seconds": 1.0, "best_epoch": 1, "task": "classification", "n_patients": counts}
        (run_dir / "result.json").write_text(json.dumps(result))
