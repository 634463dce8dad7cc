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


# ------------------------------------------------------------------------------------------ segmentation

SEG_CLASSES = ["background", "lung", "nodule"]


def write_seg_manifest(root: Path, n_patients: int = 24, scans_per_patient: int = 1, size: int = 4) -> Path:
    """Tiny NIfTI volumes with label maps, ``scans_per_patient`` per patient; ``label`` (nodule / no_nodule) is the
    split stratum, as in sample_data/ct_nifti_masks."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    for i in range(n_patients):
        for k in range(scans_per_patient):
            rng = np.random.default_rng(100 * i + k)
            img = rng.normal(0, 50, (size, size, size)).astype(np.float32)
            mask = np.zeros((size, size, size), np.uint8)
            mask[1:3, 1:3, 1:3] = 1
            if i % 2:
                mask[1, 1, 1] = 2
            nib.save(nib.Nifti1Image(img, affine), str(root / f"img{i}_{k}.nii.gz"))
            nib.save(nib.Nifti1Image(mask, affine), str(root / f"mask{i}_{k}.nii.gz"))
            rows.append(
                {
                    "image": f"img{i}_{k}.nii.gz",
                    "mask": f"mask{i}_{k}.nii.gz",
                    "label": "nodule" if i % 2 else "no_nodule",
                    "patient_id": f"P{i:03d}",
                }
            )
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "mask", "label", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    return root / "manifest.csv"


def seg_compare_yaml(manifest: Path, *, arms: str, primary: str | None = None, seeds: int = 3) -> str:
    """A segmentation comparison config (the stand-in engine ignores the model settings)."""
    return (
        f"data: {{manifest: {manifest}, modality: CT, mode: 3d}}\n"
        "segmentation: {classes: [background, lung, nodule], patch_size: [32, 32, 32]}\n"
        "model: {arch: resnet18_3d, in_channels: 1}\n"
        "train: {epochs: 4}\n"
        "compare:\n"
        f"  arms:\n{arms}"
        f"  seeds: {seeds}\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 300\n" + (f"  primary_metric: {primary}\n" if primary else "")
    )


class FakeSegEngine:
    """Stands in for medtl.train.fine_tune on a segmentation config: writes the run folder a segmentation run writes
    (predictions_test.csv with one row of per-class metrics per test scan, metrics.csv with val_dice, val_hd95 and
    val_surface_dice, result.json with ``"task": "segmentation"``, overlays/*.png).

    Args:
        quality: weights -> (Dice, HD95 in mm) around which each scan's values are drawn (per class, with noise).
        undefined: weights -> how many test patients (the first, by pseudonym) get an undefined HD95 on every
            class of every scan (the prediction missed the classes: Dice 0 there).
        overlays: overlay PNGs each run writes.
    """

    def __init__(
        self,
        quality: dict[str, tuple[float, float]],
        undefined: dict[str, int] | None = None,
        overlays: int = 2,
    ):
        self.quality = quality
        self.undefined = undefined or {}
        self.overlays = overlays
        self.calls: list[tuple[str, int, float]] = []

    def __call__(self, config, *, run_dir, quiet=False):
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        from medtl.data import Manifest
        from medtl.data.splits import read_splits_csv

        run_dir = Path(run_dir)
        w, s, f = config.model.weights, config.train.seed, config.splits.label_fraction
        self.calls.append((w, s, f))
        run_dir.mkdir(parents=True)
        assignment = read_splits_csv(config.splits.file)
        manifest = Manifest.from_csv(config.data.manifest)
        rng = np.random.default_rng([s, round(f * 1000), sum(map(ord, w))])
        dice, hd95 = self.quality[w]
        classes = config.segmentation.classes[1:]
        test = [r for r in manifest.to_dicts() if assignment[r["patient_id"]] == "test"]
        missed = sorted({r["patient_id"] for r in test})[: self.undefined.get(w, 0)]
        with open(run_dir / "predictions_test.csv", "w", newline="") as fh:
            cols = ["image", "mask", "patient_id", "dice"] + [
                f"{m}_{c}" for m in ("dice", "hd95", "surface_dice") for c in classes
            ]
            wr = csv.DictWriter(fh, fieldnames=cols)
            wr.writeheader()
            for r in test:
                row = {"image": r["image"], "mask": r.get("mask", ""), "patient_id": r["patient_id"]}
                for c in classes:
                    if r["patient_id"] in missed:
                        d, h = 0.0, float("nan")
                    else:
                        d = float(np.clip(dice + rng.normal(0, 0.05), 0, 1))
                        h = float(max(0.0, hd95 + rng.normal(0, 0.5)))
                    row |= {f"dice_{c}": d, f"hd95_{c}": h, f"surface_dice_{c}": d}
                row["dice"] = float(np.mean([row[f"dice_{c}"] for c in classes]))
                wr.writerow(row)
        with open(run_dir / "metrics.csv", "w") as fh:
            fh.write("epoch,time_s,train_loss,val_loss,val_dice,val_hd95,val_surface_dice\n")
            for e in range(1, config.train.epochs + 1):
                v = dice * min(1.0, e / 2)
                fh.write(f"{e},{e * 2.0},0.5,0.5,{v:.4f},{hd95 * max(1.0, 4 - e):.4f},{v:.4f}\n")
        (run_dir / "overlays").mkdir()
        for k in range(self.overlays):
            plt.imsave(run_dir / "overlays" / f"scan{k}.png", rng.random((8, 8)))
        (run_dir / "load_report.json").write_text(json.dumps({"summary": f"loaded {w}"}))
        (run_dir / "result.json").write_text(
            json.dumps({"status": "ok", "task": "segmentation", "seconds": 1.0, "best_epoch": 2})
        )
