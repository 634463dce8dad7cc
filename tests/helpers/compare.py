"""A compare experiment without training: a manifest of small radiographs and a stand-in training engine.

Shared by tests/comparison/test_compare.py and tests/cli/test_compare_cmds.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from pydicom.uid import SecondaryCaptureImageStorage

from helpers.dicom import write_radiograph

CLASSES = ["negative", "positive"]


def write_manifest(root: Path, n_patients: int = 30, size: int = 8) -> Path:
    """Secondary-capture DICOM images, one per patient; positives carry a bright square."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_patients):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 200, (size, size)).astype(np.uint16)
        if i % 2:
            img[size // 4 : size // 2, size // 4 : size // 2] += 800
        write_radiograph(
            root / f"img{i}.dcm", img, f"P{i:03d}", sop_class=SecondaryCaptureImageStorage, pixel_spacing=None
        )
        rows.append({"image": f"img{i}.dcm", "label": CLASSES[i % 2], "patient_id": f"P{i:03d}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


class FakeEngine:
    """Stands in for medtl.train.fine_tune: writes a run folder as the real engine does.

    Pretrained arms separate the classes well, scratch poorly; an arm named "broken" raises.
    """

    def __init__(self, interrupt_at: int | None = None):
        self.calls: list[tuple[str, int, float]] = []
        self.train_patients: dict[tuple[str, int, float], list[str]] = {}
        self.interrupt_at = interrupt_at

    def __call__(self, config, *, run_dir, quiet=False):
        from medtl.data import Manifest
        from medtl.data.splits import label_fraction_patients, patient_labels, read_splits_csv

        run_dir = Path(run_dir)
        w, s, f = config.model.weights, config.train.seed, config.splits.label_fraction
        self.calls.append((w, s, f))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if Path(w).name == "broken.pth":
            raise RuntimeError("checkpoint broken.pth is corrupt")
        run_dir.mkdir(parents=True)
        assignment = read_splits_csv(config.splits.file)
        manifest = Manifest.from_csv(config.data.manifest)
        labels = patient_labels(manifest)
        train = [p for p, sp in assignment.items() if sp == "train"]
        used = label_fraction_patients(train, labels, f, seed=config.splits.seed)
        self.train_patients[(w, s, f)] = used
        rng = np.random.default_rng(hash((w, s, f)) % 2**32)
        strength = 2.5 if w != "scratch" else 0.3
        with open(run_dir / "metrics.csv", "w") as fh:
            fh.write("epoch,time_s,train_loss,val_loss,val_auroc\n")
            for e in range(1, config.train.epochs + 1):
                fh.write(f"{e},{e * 1.5},0.5,0.5,{min(1, 0.5 + strength * e / 10):.4f}\n")
        with open(run_dir / "predictions_test.csv", "w") as fh:
            fh.write("image,patient_id,label,prob_negative,prob_positive\n")
            for r in manifest.to_dicts():
                if assignment[r["patient_id"]] != "test":
                    continue
                p = 1 / (1 + np.exp(-(strength * (2 * r["label"] - 1) + rng.normal())))
                fh.write(f"{r['image']},{r['patient_id']},{r['label_name']},{1 - p},{p}\n")
        (run_dir / "load_report.json").write_text(json.dumps({"summary": f"loaded {w}"}))
        (run_dir / "result.json").write_text(json.dumps({"status": "ok", "seconds": 1.0, "best_epoch": 2}))
        return None
