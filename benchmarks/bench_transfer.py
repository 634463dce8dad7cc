"""medtl's defaults against a plain 40-line torchvision loop, on the same split and budget.

Two tasks of real images:

* ``mni``: 2D 64x64 patches of axial slices of the MNI152 T1 template shipped in the nilearn wheel, labelled by
  the dominant tissue of their central 16x16 window (grey matter, white matter, CSF, outside the brain) from
  nilearn's grey/white-matter maps and brain mask. The split is BY REGION: the brain's axial range is cut into
  slabs of 10 slices separated by 4-slice gaps, and whole slabs go to train, validation or test, so no voxel is
  in two splits. Written as one-slice NIfTI volumes (uint8, as in the template) plus a manifest.
* ``xray``: the sample radiographs in ``sample_data/xray`` (2D DICOM), split by patient.

Each task runs (a) ``medtl.compare`` with the config a user would write (data, modality, size, arch, epochs,
batch size; everything else default) and (b) a plain loop written below: intensity / 255 (MNI) or per-image
min-max (X-rays: 12-bit DICOM), ImageNet mean/std, random left-right flip, MobileNetV2, AdamW + OneCycleLR at
1e-3 (ImageNet) / 3e-3 (scratch), weight decay 1e-4, the last epoch tested. Both print per-seed test accuracy,
balanced accuracy, AUROC and seconds per epoch.

    export HF_HUB_OFFLINE=1 TORCH_HOME=$PWD/.cache/torch MEDTL_HOME=/tmp/bench-home
    .venv/bin/python benchmarks/bench_transfer.py --task mni --epochs 10 --seeds 2
    .venv/bin/python benchmarks/bench_transfer.py --task mni --ablate intensity_zscore,no_augment --seeds 2
    .venv/bin/python benchmarks/bench_transfer.py --task mni --only plain      # only the plain loop

``--ablate`` runs medtl again with the named overrides (see ``ABLATIONS``) and prints its table next to the
default's. It is a benchmark, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["background", "csf", "grey", "white"]

# medtl overrides per ablation: {"all": overrides for every arm} or {"imagenet": ..., "scratch": ...}
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    # the augmentation defaults before this benchmark: flip of axis 0 (rows: upside down in 2D), rotation 10
    # degrees and zoom 0.1 at p=0.5, intensity shift 0.05 at p=0.5
    "v1_augment": {
        "all": {
            "augment.flip_axes": [0],
            "augment.rotate_deg": 10.0,
            "augment.zoom": 0.1,
            "augment.intensity_shift": 0.05,
        }
    },
    "updown_flip": {"all": {"augment.flip_axes": [0]}},
    "rotate_zoom": {"all": {"augment.rotate_deg": 10.0, "augment.zoom": 0.1}},
    "intensity_shift": {"all": {"augment.intensity_shift": 0.05}},
    "no_augment": {"all": {"augment.enabled": False}},
    "intensity_range": {"all": {"preprocess.intensity": "range"}},
    "intensity_percentiles": {"all": {"preprocess.intensity": "percentiles"}},
    "scratch_percentiles": {"scratch": {"preprocess.intensity": "percentiles"}},
    "scratch_imagenet_norm": {"scratch": {"preprocess.normalization": "imagenet"}},
    "no_precise_bn": {"all": {"train.precise_bn_batches": 0}},
    "no_precise_bn_imagenet": {"imagenet": {"train.precise_bn_batches": 0}},
    "no_freeze": {"imagenet": {"train.freeze_epochs": 0}},
    "flat_rates": {"imagenet": {"train.lr_mult": 1.0, "train.unfreeze_lr_factor": 1.0}},
    "flat_rates_range": {
        "imagenet": {"train.lr_mult": 1.0, "train.unfreeze_lr_factor": 1.0, "preprocess.intensity": "range"}
    },
    # the discriminative rates of before the flat default (fastai's: stem at lr / 10, half the rate after unfreezing)
    "discriminative_rates": {"imagenet": {"train.lr_mult": 10.0, "train.unfreeze_lr_factor": 0.5}},
    # (a compare arm's schedule wins over train.schedule: an ablation of the schedule sets the arm's)
    "one_cycle_imagenet": {"imagenet": {"arm.schedule": "one_cycle"}},
    # the plain loop's schedule for the ImageNet arm: everything trains from the start, one rate, 1e-3
    "one_cycle_imagenet_1e-3": {"imagenet": {"arm.schedule": "one_cycle", "train.lr": 1e-3}},
    "scratch_lr3e-3": {"scratch": {"train.lr": 3e-3}},
    "size224": {"all": {"preprocess.size": [224, 224]}},
    "pad_crop": {"all": {"preprocess.resize": "pad_crop"}},
    "csv_logger": {"all": {"train.loggers": ["csv"]}},
    # the checkpoint tested: best on the 50 validation patches (precise BN before every validation) vs the last
    "select_best": {"all": {"train.select": "best"}},
    # OneCycleLR's default warm-up share (the plain loop's) instead of medtl's 0.25
    "pct_start_0.3": {"all": {"train.pct_start": 0.3}},
    "select_last": {"all": {"train.select": "last"}},
}


# ------------------------------------------------------------------------------------------------ data


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A benchmark task's manifest.csv (image, label, patient_id, split); returns ``path``."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "patient_id", "split"])
        w.writeheader()
        w.writerows(rows)
    return path


def mni_tissue() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's 1 mm MNI152 T1 template (its file's 0..255 values), the tissue probabilities in CLASSES order
    (background, CSF, grey and white matter; CSF is the brain mask less grey and white matter) and the brain mask."""
    from nilearn import datasets

    # stored as uint8 on disk; nilearn hands it over as floats in [0, 1]: back to the file's 0..255 values
    t1 = np.round(datasets.load_mni152_template(resolution=1).get_fdata() * 255.0).astype(np.uint8)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    csf = np.clip(mask.astype(float) - gm - wm, 0.0, 1.0)
    return t1, np.stack([1.0 - mask.astype(float), csf, gm, wm]), mask


def make_mni_task(out: Path, *, patch: int = 64, center: int = 16, per_class: int = 28) -> Path:
    """Write the MNI tissue task (one-slice NIfTI patches and manifest.csv) into ``out``; returns the manifest."""
    import nibabel as nib

    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    t1, probs, mask = mni_tissue()
    head = t1 > 10
    zs = np.nonzero(mask.any(axis=(0, 1)))[0]
    z0, z1 = int(zs.min()) + 5, int(zs.max()) - 5
    # slabs of 10 slices, 4-slice gaps; pattern train, test, val, test, train, test, ... over the axial range
    pattern = ["train", "test", "train", "val", "test", "train", "test"]
    rng = np.random.default_rng(0)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    half, c = patch // 2, center // 2
    nx, ny, _ = t1.shape
    for s, start in enumerate(range(z0, z1 - 10, 14)):
        split = pattern[s % len(pattern)]
        cands: dict[int, list[tuple[int, int, int]]] = {k: [] for k in range(len(CLASSES))}
        for z in range(start, start + 10, 2):
            for x in range(half, nx - half, 6):
                for y in range(half, ny - half, 6):
                    if not head[x, y, z]:
                        continue
                    win = probs[:, x - c : x + c, y - c : y + c, z].mean(axis=(1, 2))
                    k = int(np.argmax(win))
                    if win[k] >= 0.5:
                        cands[k].append((x, y, z))
        quota = per_class // 2 if split == "val" else per_class
        for k, pts in cands.items():
            for i in rng.permutation(len(pts))[:quota]:
                x, y, z = pts[i]
                arr = t1[x - half : x + half, y - half : y + half, z : z + 1].astype(np.uint8)
                name = f"img/s{s:02d}_{CLASSES[k]}_{x}_{y}_{z}.nii.gz"
                nib.save(nib.Nifti1Image(arr, np.eye(4)), str(out / name))
                rows.append({"image": name, "label": CLASSES[k], "patient_id": f"s{s:02d}-{x}-{y}-{z}", "split": split})
    return write_manifest(manifest, rows)


def load_arrays(manifest: Path, task: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Images (N, H, W) float in [0, 1] and labels per split, read the plain way (nibabel / pydicom)."""
    rows = list(csv.DictReader(open(manifest)))
    classes = sorted({r["label"] for r in rows})
    out: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    if task == "mni":
        import nibabel as nib

        for r in rows:
            img = np.asarray(nib.load(str(manifest.parent / r["image"])).dataobj)[..., 0].astype(np.float32) / 255.0
            out[r["split"]][0].append(img.T)  # (y, x): rows are anterior-posterior, columns left-right
            out[r["split"]][1].append(classes.index(r["label"]))
    else:
        raise ValueError(task)
    return {k: (np.stack(v[0]), np.asarray(v[1])) for k, v in out.items() if v[0]}, classes


def xray_split_manifest(out: Path) -> Path:
    """The sample X-ray manifest with patient IDs (from the DICOM headers) and a fixed split column."""
    from medtl.data import Manifest
    from medtl.data.splits import make_splits

    src = ROOT / "sample_data/xray/manifest.csv"
    records = Manifest.from_csv(src).to_dicts()
    assignment = make_splits(records, seed=0, val_fraction=0.25, test_fraction=0.3)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"image": str(r["image"]), "label": r["label_name"], "patient_id": str(r["patient_id"])} for r in records]
    return write_manifest(out / "manifest.csv", [{**r, "split": assignment[r["patient_id"]]} for r in rows])


def load_xray_arrays(manifest: Path, size: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Radiographs as displayed, per-image min-max to [0, 1] (they are 12-bit), resized to ``size``."""
    import torch.nn.functional as F

    from medtl.io import read_scan

    rows = list(csv.DictReader(open(manifest)))
    classes = sorted({r["label"] for r in rows})
    out: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for r in rows:
        img = read_scan(r["image"]).as_tensor().float()[0].T  # read_scan's 2D layout is (C, columns, rows)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        img = F.interpolate(img[None, None], size=(size, size), mode="area")[0, 0]
        out[r["split"]][0].append(img.numpy())
        out[r["split"]][1].append(classes.index(r["label"]))
    return {k: (np.stack(v[0]), np.asarray(v[1])) for k, v in out.items() if v[0]}, classes


# ------------------------------------------------------------------------------------------ plain loop


def plain_loop(
    data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, *, pretrained: bool, seed: int, epochs: int, bs: int
) -> dict[str, float]:
    """The 40-line loop: /255, ImageNet mean/std, left-right flip, AdamW + OneCycleLR, last epoch."""
    import torchvision

    torch.manual_seed(seed)
    np.random.seed(seed)
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1 if pretrained else None
    model = torchvision.models.mobilenet_v2(weights=weights)
    model.classifier[1] = torch.nn.Linear(model.last_channel, n_classes)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def prep(x: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(x).float()[:, None].repeat(1, 3, 1, 1) - mean) / std

    xtr, ytr = prep(data["train"][0]), torch.from_numpy(data["train"][1]).long()
    xte, yte = prep(data["test"][0]), data["test"][1]
    lr = 1e-3 if pretrained else 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = math.ceil(len(xtr) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(steps):
            idx = perm[i * bs : (i + 1) * bs]
            x = xtr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)  # left-right: the last (column) axis
            loss = torch.nn.functional.cross_entropy(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    with torch.no_grad():
        prob = torch.cat([model(xte[i : i + 128]).softmax(1) for i in range(0, len(xte), 128)]).numpy()
    return _metrics(prob, yte, n_classes) | {
        "s_per_epoch": train_s / epochs,
        "cpu_per_epoch": train_cpu / epochs,
        "fit_cpu_per_epoch": train_cpu / epochs,
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def _metrics(prob: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    pred = prob.argmax(1)
    if n_classes == 2:
        auc = roc_auc_score(y, prob[:, 1])
    else:
        auc = roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "auroc": float(auc),
    }


# ----------------------------------------------------------------------------------------------- medtl


def user_config(task: str, manifest: Path, *, epochs: int, bs: int, size: int, out: Path) -> dict[str, Any]:
    """The comparison config a user would write: data, size, arch, epochs, batch size; the rest default."""
    data: dict[str, Any] = {"manifest": str(manifest)}
    if task == "mni":
        data["modality"] = "MR"  # NIfTI carries no modality; the user says what the scans are
    return {
        "data": data,
        "preprocess": {"size": [size, size]},
        "model": {"arch": "mobilenet_v2"},
        "train": {"epochs": epochs, "batch_size": bs},
        "output": {"dir": str(out), "name": task},
        "compare": {
            "arms": [
                {"name": "imagenet", "model": {"weights": "imagenet"}},
                {"name": "scratch", "model": {"weights": "scratch"}},
            ],
            "fractions": [1.0],
            "primary_metric": "accuracy",
        },
    }


def last_epoch_metrics(run_dir: Path) -> dict[str, float]:
    """Test metrics of the run's LAST epoch (last.ckpt), to set against the best-on-validation checkpoint."""
    from medtl.rundir import RunDir
    from medtl.train.experiment import prepare_experiment
    from medtl.train.inference import predict_dataset

    run = RunDir(run_dir)
    cfg = run.read_config()
    exp = prepare_experiment(cfg, splits_file=run.file(RunDir.SPLITS), build_datasets=False)
    ds = exp.task.make_dataset(exp, exp.splits["test"], train=False, cache="none")
    model = exp.build_model(pretrained=False)
    state = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    scores, targets, _ = predict_dataset(model.eval(), ds, exp.task, batch_size=64)
    m = exp.task.metrics(scores, targets)
    return {f"last_{k}": float(m[k]) for k in ("accuracy", "balanced_accuracy", "auroc")}


FIT_CPU: list[float] = []  # CPU seconds of each medtl fit (training loop, validations, precise BN, checkpoints)


def _time_fits() -> None:
    """Record the process CPU time of each medtl ``Trainer.fit``: the part of a run that the plain loop's
    "training only" figure compares with (setup, caching and the final test are left out, as in the loop)."""
    from medtl.train.module import TaskModule

    if getattr(TaskModule, "_bench_timed", False):
        return

    def on_train_start(self: Any) -> None:
        self._bench_c0 = time.process_time()

    def on_train_end(self: Any) -> None:
        FIT_CPU.append(time.process_time() - self._bench_c0)

    TaskModule.on_train_start = on_train_start  # type: ignore[method-assign]
    TaskModule.on_train_end = on_train_end  # type: ignore[method-assign]
    TaskModule._bench_timed = True  # type: ignore[attr-defined]


def medtl_runs(
    cfg: dict[str, Any],
    out_dir: Path,
    *,
    seeds: int,
    arm_overrides: dict[str, dict[str, Any]] | None = None,
    last_epoch: bool = False,
) -> dict[str, list[dict[str, float]]]:
    """Run ``medtl.compare`` (arm-specific overrides as one compare per arm); per arm, per seed metrics.

    CPU seconds per run are this process's CPU time between two "done" events of compare (runs go one after
    the other in this process), so other programs on a shared machine do not inflate them.
    """
    import medtl

    _time_fits()
    arm_overrides = arm_overrides or {}
    common = arm_overrides.get("all", {})
    groups: list[tuple[list[str], dict[str, Any]]] = []
    specific = {a: o for a, o in arm_overrides.items() if a != "all"}
    if specific:  # only the arms the ablation changes run again
        for arm in ("imagenet", "scratch"):
            if arm in specific:
                groups.append(([arm], {**common, **specific[arm]}))
    else:
        groups.append((["imagenet", "scratch"], common))
    out: dict[str, list[dict[str, float]]] = {}
    for arms, overrides in groups:
        cpu: list[float] = []
        mark = [time.process_time()]

        def on_event(msg: str, cpu: list[float] = cpu, mark: list[float] = mark) -> None:
            if ": done" in msg or "FAILED" in msg:
                now = time.process_time()
                cpu.append(now - mark[0])
                mark[0] = now

        fits_before = len(FIT_CPU)
        if len(arms) == 1:  # compare needs its reference among the arms run
            overrides = {**overrides, "compare.reference": arms[0]}
        # "arm.<field>" keys change the compare arm itself (its schedule wins over train.schedule)
        arm_fields = {k.removeprefix("arm."): v for k, v in overrides.items() if k.startswith("arm.")}
        overrides = {k: v for k, v in overrides.items() if not k.startswith("arm.")}
        run_cfg = cfg
        if arm_fields:
            run_cfg = json.loads(json.dumps(cfg))
            for a in run_cfg["compare"]["arms"]:
                if a["name"] in arms:
                    a.update(arm_fields)
        res = medtl.compare(
            run_cfg,
            out_dir=out_dir / "-".join(arms),
            seeds=seeds,
            arms=arms,
            overrides=overrides or None,
            on_event=on_event,
        )
        # runs finish in plan order: seed-major, arms in config order
        order = [(seed, arm) for seed in range(seeds) for arm in arms]
        cpu_of = dict(zip(order, cpu, strict=False))
        fit_of = dict(zip(order, FIT_CPU[fits_before:], strict=False))
        for rec in sorted(res.results.runs, key=lambda r: (r.arm, r.seed)):
            if not rec.ok:
                out.setdefault(rec.arm, []).append({"error": rec.error})  # type: ignore[dict-item]
                continue
            run = Path(rec.run_dir)
            rows = list(csv.DictReader(open(run / "metrics.csv")))
            result = json.loads((run / "result.json").read_text())
            row = {k: float(rec.test_metrics[k]) for k in ("accuracy", "balanced_accuracy", "auroc")} | {
                "s_per_epoch": float(rows[-1]["time_s"]) / len(rows),
                "seconds": float(result["seconds"]),
                "cpu_s": cpu_of.get((rec.seed, rec.arm), math.nan),
                "best_epoch": float(result.get("best_epoch") or math.nan),
            }
            row["cpu_per_epoch"] = row["cpu_s"] / len(rows)
            row["fit_cpu_per_epoch"] = fit_of.get((rec.seed, rec.arm), math.nan) / len(rows)
            if last_epoch:
                row |= last_epoch_metrics(run)
            out.setdefault(rec.arm, []).append(row)
    return out


# ---------------------------------------------------------------------------------------------- tables


def table(title: str, results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table: per seed, then the mean (and SD of accuracy) per arm."""
    last = any("last_accuracy" in r for runs in results.values() for r in runs)
    head = (
        "| arm | seed | accuracy | bal. acc. | AUROC | s/epoch (wall) | CPU s/epoch (run) "
        "| CPU s/epoch (training) | best epoch |"
    )
    if last:
        head += " last-epoch acc. |"
    lines = [f"\n{title}", head, "|" + "---|" * (head.count("|") - 1)]

    def fmt(rows: list[dict[str, float]], key: str, spec: str = ".3f") -> str:
        vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        return format(statistics.mean(vals), spec) if vals else "-"

    for arm, runs in results.items():
        for seed, r in enumerate(runs):
            if "error" in r:
                lines.append(f"| {arm} | {seed} | FAILED: {r['error']} |")
                continue
            line = (
                f"| {arm} | {seed} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['auroc']:.3f} "
                f"| {r['s_per_epoch']:.2f} | {fmt([r], 'cpu_per_epoch', '.2f')} "
                f"| {fmt([r], 'fit_cpu_per_epoch', '.2f')} | {fmt([r], 'best_epoch', '.0f')} |"
            )
            lines.append(line + (f" {fmt([r], 'last_accuracy')} |" if last else ""))
        ok = [r for r in runs if "error" not in r]
        if ok:
            acc = [r["accuracy"] for r in ok]
            sd = statistics.stdev(acc) if len(acc) > 1 else math.nan
            line = (
                f"| **{arm} mean** | {len(ok)} | **{statistics.mean(acc):.3f}** (SD {sd:.3f}) "
                f"| {fmt(ok, 'balanced_accuracy')} | {fmt(ok, 'auroc')} | {fmt(ok, 's_per_epoch', '.2f')} "
                f"| {fmt(ok, 'cpu_per_epoch', '.2f')} | {fmt(ok, 'fit_cpu_per_epoch', '.2f')} | |"
            )
            lines.append(line + (f" {fmt(ok, 'last_accuracy')} |" if last else ""))
    return "\n".join(lines)


def ratio_table(plain: dict[str, list[dict[str, float]]], medtl: dict[str, list[dict[str, float]]]) -> str:
    """medtl / plain per arm: mean test accuracy and CPU seconds per epoch (training loop; whole run)."""

    def mean(rows: list[dict[str, float]], key: str) -> float:
        vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        return statistics.mean(vals) if vals else math.nan

    lines = [
        "\nmedtl / plain (same run)",
        "| arm | accuracy medtl / plain | ratio | CPU s/epoch, training loop: medtl / plain | ratio "
        "| CPU s/epoch, whole medtl run / plain training | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in plain:
        p, m = plain[arm], [r for r in medtl.get(arm, []) if "error" not in r]
        if not m:
            continue
        acc = (mean(m, "accuracy"), mean(p, "accuracy"))
        fit = (mean(m, "fit_cpu_per_epoch"), mean(p, "fit_cpu_per_epoch"))
        run = (mean(m, "cpu_per_epoch"), mean(p, "cpu_per_epoch"))
        lines.append(
            f"| {arm} | {acc[0]:.3f} / {acc[1]:.3f} | {acc[0] / acc[1]:.2f} | {fit[0]:.2f} / {fit[1]:.2f} "
            f"| {fit[0] / fit[1]:.2f}x | {run[0]:.2f} / {run[1]:.2f} | {run[0] / run[1]:.2f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["mni", "xray"], default="mni")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=None, help="input size (default: 64 for mni, 96 for xray)")
    ap.add_argument("--only", choices=["both", "medtl", "plain", "none"], default="both")
    ap.add_argument("--ablate", default="", help=f"comma-separated, of: {', '.join(ABLATIONS)}")
    ap.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both loops (medtl: train.threads)")
    ap.add_argument("--last-epoch", action="store_true", help="also test each medtl run's last epoch")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_HOME", str(ROOT / ".cache/torch"))
    threads = args.threads
    torch.set_num_threads(threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size or (64 if args.task == "mni" else 96)
    if args.task == "mni":
        manifest = make_mni_task(work / "mni-data")
        data, classes = load_arrays(manifest, "mni")
    else:
        manifest = xray_split_manifest(work / "xray-data")
        data, classes = load_xray_arrays(manifest, size)
    counts = {k: len(v[1]) for k, v in data.items()}
    print(
        f"task {args.task}: {len(classes)} classes {classes}, images per split {counts}, size {size}, "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.seeds} seeds, {threads} threads; work {work}"
    )
    report: dict[str, Any] = {"task": args.task, "counts": counts, "epochs": args.epochs, "seeds": args.seeds}
    if args.only in ("both", "plain"):
        plain: dict[str, list[dict[str, float]]] = {"imagenet": [], "scratch": []}
        for seed in range(args.seeds):
            for arm in ("imagenet", "scratch"):
                plain[arm].append(
                    plain_loop(
                        data,
                        len(classes),
                        pretrained=arm == "imagenet",
                        seed=seed,
                        epochs=args.epochs,
                        bs=args.batch_size,
                    )
                )
        print(table("plain torchvision loop (last epoch)", plain), flush=True)
        report["plain"] = plain
    cfg = user_config(args.task, manifest, epochs=args.epochs, bs=args.batch_size, size=size, out=work / "runs")
    cfg["train"]["threads"] = threads  # the same CPU threads as the plain loop
    if args.only in ("both", "medtl"):
        res = medtl_runs(cfg, work / "medtl-default", seeds=args.seeds, last_epoch=args.last_epoch)
        print(table("medtl compare, defaults", res), flush=True)
        report["medtl"] = res
        if "plain" in report:
            print(ratio_table(report["plain"], res), flush=True)
    for name in [a for a in args.ablate.split(",") if a]:
        res = medtl_runs(
            cfg, work / f"ablate-{name}", seeds=args.seeds, arm_overrides=ABLATIONS[name], last_epoch=args.last_epoch
        )
        print(table(f"medtl, ablation {name}: {ABLATIONS[name]}", res), flush=True)
        report.setdefault("ablations", {})[name] = res
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
