"""The training loader of a 3D cohort alone, against what the model consumes: does loading keep the device busy?

A cohort of NIfTI volumes (default 32 of 160^3 int16, CT-like, written once into the work folder) goes through
medtl's real pipeline of a ResNet-18 3D run at 128^3 (``prepare_experiment``: reorientation, CT window, resize,
augmentation, normalisation), and for each loader setting the script measures:

* **fill**: seconds to build the training dataset, i.e. to preprocess every scan into the cache (memory:
  ``CacheDataset``; disk: the shared cache of :mod:`medtl.data.loading`, emptied first). ``disk, next run`` is a
  second run with the same preprocessing (another arm, seed or label fraction of a comparison): it finds the files;
* **loader samples/s**: iterating the training ``DataLoader`` (shuffling, augmentation, collation; on a GPU the copy
  to the device, with pinned memory), first epoch and later epochs; ``augment gpu`` applies the flips to the batch
  on the device instead (``augment.device: gpu``);
* **model samples/s**: ResNet-18 3D forward + backward + AdamW step on tensors of the same shape and batch size
  (on a GPU: bf16 autocast and channels_last_3d, as ``train.precision: auto`` and ``train.channels_last`` train).

``loader / model`` above 1 means the loader alone produces samples faster than the model consumes them (the target
of ``benchmarks/gpu_check.py`` (c) is an end-to-end rate >= 0.90 of the model-only rate).

    .venv/bin/python benchmarks/bench_loader.py                  # CPU (the device's threads: all cores)
    .venv/bin/python benchmarks/bench_loader.py --device cuda    # on a GPU
    .venv/bin/python benchmarks/bench_loader.py --quick          # tiny sizes, seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Row:
    """One loader setting."""

    setting: str
    cache: str
    workers: int
    fill_s: float = float("nan")
    scans: int = 0  # training scans (samples per epoch, a last incomplete batch dropped)
    epochs: list[float] = field(default_factory=list)  # samples/s per epoch

    @property
    def first(self) -> float:
        return self.epochs[0] if self.epochs else float("nan")

    @property
    def later(self) -> float:
        return statistics.mean(self.epochs[1:]) if len(self.epochs) > 1 else float("nan")


def write_cohort(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` CT-like int16 NIfTI volumes of ``size``^3 (air, a body, a dense sphere in the positives) and a manifest;
    kept when the folder already holds them."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    if manifest.is_file() and len(list(folder.glob("vol_*.nii.gz"))) == n:
        return manifest
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size, :size].astype(np.float32) / size - 0.5
    body = (grid[0] ** 2 + grid[1] ** 2) < 0.16
    rows = []
    for i in range(n):
        vol = np.full((size, size, size), -1000.0, np.float32)
        vol[body] = 40.0
        if i % 2:
            c = rng.uniform(-0.15, 0.15, 3)
            vol[((grid - c[:, None, None, None]) ** 2).sum(0) < 0.01] = 300.0
        vol += rng.normal(0, 20, vol.shape).astype(np.float32)
        name = f"vol_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.int16), np.diag([1.0, 1.0, 1.5, 1.0])), str(folder / name))
        rows.append({"image": name, "label": "positive" if i % 2 else "negative", "patient_id": f"P{i:03d}"})
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def experiment_config(manifest: Path, volumes: int, size: int, batch: int, augment_device: str) -> dict[str, Any]:
    return {
        "data": {"manifest": str(manifest), "modality": "CT", "mode": "3d"},
        # a few validation patients (prepare_experiment needs some); the rest is the training split measured
        "splits": {"seed": 0, "val_fraction": 0.1 if volumes >= 20 else 0.25, "test_fraction": 0.0},
        "preprocess": {"size": [size] * 3, "ct_window": [-1000, 400]},
        "augment": {"enabled": True, "flips": ["left_right", "anterior_posterior"], "device": augment_device},
        "model": {"arch": "resnet18_3d", "weights": "scratch"},
        "train": {"batch_size": batch},
    }


def loader_rate(
    cfg: dict[str, Any], *, cache: str, workers: int, epochs: int, device: torch.device, clear: bool, setting: str
) -> Row:
    """Fill the training dataset's cache, then iterate its loader ``epochs`` times (see the module docstring)."""
    from medtl.data.loading import preprocessing_cache_dir
    from medtl.train.experiment import prepare_experiment
    from medtl.train.inference import make_loader
    from medtl.transforms.batch import batch_augmentation

    exp = prepare_experiment(cfg, build_datasets=False)
    folder = preprocessing_cache_dir(exp)
    if clear and cache == "disk" and folder.exists():  # a cold disk cache (memory rows leave it alone)
        shutil.rmtree(folder)
    row = Row(setting, cache, workers)
    t0 = time.perf_counter()
    ds = exp.task.make_dataset(exp, exp.splits["train"], train=True, cache=cache)
    row.fill_s = time.perf_counter() - t0
    row.scans = len(ds)
    cuda = device.type == "cuda"
    loader = make_loader(ds, batch_size=exp.config.train.batch_size, train=True, num_workers=workers, on_gpu=cuda)
    on_batch = batch_augmentation(exp.config, exp.pipeline)
    for _ in range(epochs):
        n = 0
        t0 = time.perf_counter()
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            if on_batch is not None:
                image = on_batch({"image": image})["image"]
            n += int(image.shape[0])
        if cuda:
            torch.cuda.synchronize()
        row.epochs.append(n / (time.perf_counter() - t0))
    del loader  # its workers end
    return row


def model_rate(size: int, batch: int, device: torch.device, steps: int) -> float:
    """Samples/s of ResNet-18 3D training steps on tensors of the loader's shape (bf16 + channels_last_3d on a
    GPU)."""
    from medtl.models import create_model

    cuda = device.type == "cuda"
    model = create_model("resnet18_3d", weights="scratch", num_classes=2, in_channels=1).to(device).train()
    x = torch.randn(batch, 1, size, size, size, device=device)
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    for _ in range(2 if cuda else 1):  # warm-up (cuDNN picks its algorithms)
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()} ({cores} cores), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--volumes", type=int, default=32, help="volumes in the cohort")
    ap.add_argument("--volume-size", type=int, default=160, help="voxels per side of each volume (int16)")
    ap.add_argument("--size", type=int, default=128, help="model input size per side")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="loader epochs per setting (the first after the fill)")
    ap.add_argument("--model-steps", type=int, default=3, help="timed model steps (after a warm-up)")
    ap.add_argument("--workers", type=int, default=None, help="the worker count of the 'workers' rows (default auto)")
    ap.add_argument("--quick", action="store_true", help="8 volumes of 40^3 at 32^3, 2 epochs: seconds")
    ap.add_argument("--work", type=Path, default=None, help="folder for the cohort and caches (default: temporary)")
    args = ap.parse_args(argv)
    if args.quick:
        args.volumes, args.volume_size, args.size, args.epochs, args.model_steps = 8, 40, 32, 2, 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)

    from medtl.data.loading import cores_per_run, resolve_num_workers

    cuda = device.type == "cuda"
    auto = resolve_num_workers("auto", cuda=cuda)
    # on the CPU auto is 0: the rows with workers show what they would give (one per core but one)
    workers = args.workers if args.workers is not None else (auto if cuda else max(1, cores_per_run() - 1))
    with tempfile.TemporaryDirectory(prefix="medtl-bench-loader-") as tmp:
        work = args.work or Path(tmp)
        os.environ["MEDTL_HOME"] = str(work / "home")
        t0 = time.perf_counter()
        manifest = write_cohort(work / "cohort", args.volumes, args.volume_size)
        write_s = time.perf_counter() - t0
        plain = experiment_config(manifest, args.volumes, args.size, args.batch_size, "cpu")
        on_gpu = experiment_config(manifest, args.volumes, args.size, args.batch_size, "gpu")
        w = f"{workers} worker{'s' if workers != 1 else ''}"
        plan = [  # (row, config, cache, workers, empty the disk cache first)
            ("memory, no workers", plain, "memory", 0, True),
            ("disk, no workers", plain, "disk", 0, True),
            ("disk, next run", plain, "disk", 0, False),
            (f"memory, {w}", plain, "memory", workers, True),
            (f"disk, next run, {w}", plain, "disk", workers, False),
            (f"disk, next run, {w}, augment gpu", on_gpu, "disk", workers, False),
        ]
        rows = [
            loader_rate(cfg, cache=c, workers=w, epochs=args.epochs, device=device, clear=clear, setting=name)
            for name, cfg, c, w, clear in plan
        ]
        model = model_rate(args.size, args.batch_size, device, args.model_steps)
    print(f"device: {device_text(device)}; torch threads {torch.get_num_threads()}; num_workers auto = {auto}")
    print(
        f"cohort: {args.volumes} NIfTI volumes of {args.volume_size}^3 int16 (written in {write_s:.0f} s), "
        f"{rows[0].scans} in the training split; ResNet-18 3D at {args.size}^3, batch {args.batch_size}"
    )
    print(f"model only: {model:.2f} samples/s" + (" (bf16 + channels_last_3d)" if cuda else " (fp32)"))
    print(f"{'setting':38}{'fill s':>8}{'epoch 1 samples/s':>19}{'later samples/s':>17}{'loader / model':>16}")
    for r in rows:
        print(f"{r.setting:38}{r.fill_s:>8.1f}{r.first:>19.1f}{r.later:>17.1f}{r.later / model:>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
