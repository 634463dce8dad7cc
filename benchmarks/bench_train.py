"""Training throughput end to end (manifest -> DICOM/NIfTI -> MONAI pipeline -> optimizer step) vs model only.

Both numbers come from one run, on the same model, batch size and device:

* end to end: ``medtl.fine_tune`` on a sample_data task (cache in memory, augmentation on), timed per
  epoch from the epoch's start to the end of its last optimizer step (validation excluded);
* model only: the same network trained on pre-made tensors of the same shape (forward, backward, AdamW step).

The ratio of epochs after the first (the first one decodes DICOM and fills the cache) is the figure of
merit; the target is >= 90%.

    .venv/bin/python benchmarks/bench_train.py                 # CT DICOM series, 3D ResNet-18, 48x48x24
    .venv/bin/python benchmarks/bench_train.py --task xray     # radiographs, 2D ResNet-18, 128x128
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    "ct": {
        "data": {"manifest": str(ROOT / "sample_data/ct/manifest.csv"), "modality": "CT", "mode": "3d"},
        "preprocess": {"size": [48, 48, 24], "ct_window": [-1000, 400]},
        "model": {"arch": "resnet18_3d", "weights": "scratch"},
    },
    "xray": {
        "data": {"manifest": str(ROOT / "sample_data/xray/manifest.csv"), "modality": "XR", "mode": "2d"},
        "preprocess": {"size": [128, 128]},
        "model": {"arch": "resnet18", "weights": "scratch"},
    },
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="ct")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the project machine has 2 shared cores)")
    ap.add_argument("--num-workers", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import lightning.pytorch as pl

    from medtl.train import fine_tune

    class PairedTimer(pl.Callback):
        """Times each training epoch up to its last optimizer step (validation excluded), then, right away,
        the same number of steps of a copy of the network on pre-made tensors: the two rates of an epoch are
        measured under the same machine load (the project machine is shared)."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.samples = 0
            self.steps = 0
            self.epochs: list[tuple[float, int, float]] = []  # (seconds, samples, model-only samples/s)
            self.shape: tuple[int, ...] = ()

        def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.setup_s = time.perf_counter() - self.t_call
            self.model = copy.deepcopy(pl_module.model).train()
            for p in self.model.parameters():
                p.requires_grad_(True)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.samples = 0
            self.steps = 0
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self.samples += int(batch["image"].shape[0])
            self.steps += 1
            self.shape = tuple(batch["image"].shape[1:])

        def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
            self.opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(self.model(x), y).backward()
            self.opt.step()

        def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            if trainer.sanity_checking:
                return
            seconds = time.perf_counter() - self.t0
            with torch.inference_mode(False), torch.enable_grad():
                self._model_only(seconds)

        def _model_only(self, seconds: float) -> None:
            x = torch.randn(args.batch_size, *self.shape)
            y = torch.randint(0, 2, (args.batch_size,))
            self._step(x, y)  # warm-up
            t0 = time.perf_counter()
            for _ in range(self.steps):
                self._step(x, y)
            model_rate = self.steps * args.batch_size / (time.perf_counter() - t0)
            self.epochs.append((seconds, self.samples, model_rate))

    task = TASKS[args.task]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            **task,
            "splits": {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.0},
            "augment": {"enabled": True},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "schedule": "one_cycle",
                "cache": "memory",
                "num_workers": args.num_workers,
                "accelerator": "cpu",
            },
            "output": {"dir": tmp, "name": "bench"},
        }
        timer = PairedTimer()
        timer.t_call = time.perf_counter()
        fine_tune(cfg, callbacks=[timer], quiet=True)

    print(
        f"task {args.task}: {cfg['model']['arch']}, input {timer.shape}, batch {args.batch_size}, "
        f"{args.threads} thread(s), num_workers {args.num_workers}, CPU"
    )
    print(
        f"setup before the first epoch (manifest, splits, decoding every scan into the cache, model): "
        f"{timer.setup_s:.1f} s"
    )
    print(
        f"{'epoch':>5}{'samples':>9}{'end-to-end s':>14}{'e2e samples/s':>15}{'model-only samples/s':>22}{'ratio':>7}"
    )
    for i, (sec, n, mrate) in enumerate(timer.epochs, start=1):
        rate = n / sec
        print(f"{i:>5}{n:>9}{sec:>14.2f}{rate:>15.2f}{mrate:>22.2f}{rate / mrate:>7.0%}")
    later = timer.epochs[1:]
    if later:
        ratios = [n / s / m for s, n, m in later]
        print(
            f"epochs after the first: end to end at {statistics.mean(ratios):.0%} of the model-only rate "
            f"(per epoch: {', '.join(f'{r:.0%}' for r in ratios)}; target >= 90%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
