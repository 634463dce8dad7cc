"""Segmentation speed: training patches per second end to end vs model only, and sliding-window inference time.

1. Training (the same paired design as bench_train.py): ``medtl.fine_tune`` on the sample CT lung/nodule masks
   (``sample_data/ct_nifti_masks``, cache in memory, RandCropByPosNegLabeld patches, augmentation on), each
   epoch timed from its start to its last optimizer step; right after it, a copy of the network trains the
   same number of steps on pre-made patches of the same shape with the same loss (DiceCE). The ratio of epochs
   after the first is the figure of merit (target >= 0.9).
2. Inference: MONAI ``sliding_window_inference`` of the same kind of network over one 256x256x128 volume
   (window = the training patch, overlap 0.25, Gaussian blending), seconds per volume.

    .venv/bin/python benchmarks/bench_seg.py                       # CPU, 3D ResNet-10 encoder, 32^3 patches
    .venv/bin/python benchmarks/bench_seg.py --device cuda --patch 96 --arch resnet18_3d   # on a GPU
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet10_3d")
    ap.add_argument("--patch", type=int, default=32, help="cubic patch / window size (a multiple of 32)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2, help="scans per batch (x samples per scan patches)")
    ap.add_argument("--samples-per-scan", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the project machine has 2 shared cores)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--volume", type=int, nargs=3, default=[256, 256, 128], help="sliding-window volume size")
    ap.add_argument("--skip-train", action="store_true", help="only time sliding-window inference")
    ap.add_argument("--repeats", type=int, default=2, help="timed sliding-window passes (the best is shown)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import lightning.pytorch as pl

    from medtl.models import create_model
    from medtl.tasks.segmentation import make_segmentation_loss, sliding_window
    from medtl.train import fine_tune

    device = torch.device(args.device)
    patch = [args.patch] * 3
    decoder = [128, 64, 32, 16, 16]

    class PairedTimer(pl.Callback):
        def __init__(self) -> None:
            self.epochs: list[tuple[float, int, float]] = []
            self.shape: tuple[int, ...] = ()

        def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.setup_s = time.perf_counter() - self.t_call
            self.model = copy.deepcopy(pl_module.model).train()
            for p in self.model.parameters():
                p.requires_grad_(True)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
            self.loss = make_segmentation_loss("dice_ce")

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.samples, self.steps, self.t0 = 0, 0, time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.samples += int(batch["image"].shape[0])
            self.steps += 1
            self.shape = tuple(batch["image"].shape)

        def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(x), y).backward()
            self.opt.step()

        def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            if trainer.sanity_checking:
                return
            seconds = time.perf_counter() - self.t0
            with torch.inference_mode(False), torch.enable_grad():
                x = torch.randn(*self.shape, device=pl_module.device)
                y = torch.randint(0, 3, (self.shape[0], 1, *self.shape[2:]), device=pl_module.device)
                self._step(x, y)  # warm-up
                t0 = time.perf_counter()
                for _ in range(self.steps):
                    self._step(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rate = self.steps * self.shape[0] / (time.perf_counter() - t0)
            self.epochs.append((seconds, self.samples, rate))

    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {
                "data": {"manifest": str(ROOT / "sample_data/ct_nifti_masks/manifest.csv"), "modality": "CT"},
                "preprocess": {"ct_window": [-1000, 400]},
                "model": {"arch": args.arch, "weights": "scratch"},
                "segmentation": {
                    "classes": ["background", "lung", "nodule"],
                    "patch_size": patch,
                    "samples_per_scan": args.samples_per_scan,
                    "decoder_channels": decoder,
                },
                "splits": {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.0},
                "augment": {"enabled": True},
                "train": {
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "schedule": "one_cycle",
                    "cache": "memory",
                    "accelerator": "gpu" if device.type == "cuda" else "cpu",
                    "precise_bn_batches": 0,
                    "loggers": ["csv"],
                },
                "output": {"dir": tmp, "name": "bench"},
            }
            timer = PairedTimer()
            timer.t_call = time.perf_counter()
            fine_tune(cfg, callbacks=[timer], quiet=True)
        print(
            f"training: {args.arch} + U-Net decoder, patches {tuple(timer.shape[1:])}, {timer.shape[0]} patches per "
            f"step, {args.threads} thread(s), {device.type}; setup before the first epoch {timer.setup_s:.1f} s"
        )
        head = f"{'epoch':>5}{'patches':>9}{'end-to-end s':>14}{'e2e patches/s':>15}"
        print(head + f"{'model-only patches/s':>22}{'ratio':>7}")
        for i, (sec, n, mrate) in enumerate(timer.epochs, start=1):
            print(f"{i:>5}{n:>9}{sec:>14.2f}{n / sec:>15.2f}{mrate:>22.2f}{n / sec / mrate:>7.0%}")
        later = timer.epochs[1:]
        if later:
            ratios = [n / s / m for s, n, m in later]
            print(f"epochs after the first: end to end at {statistics.mean(ratios):.0%} of model only (target >= 90%)")

    model = create_model(args.arch, head="unet", num_classes=3, decoder_channels=decoder).to(device).eval()
    vol = torch.randn(1, model.in_channels, *args.volume, device=device)
    with torch.no_grad():
        sliding_window(model, vol[..., : args.patch, : args.patch, : args.patch], patch)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            sliding_window(model, vol, patch, overlap=0.25, blend="gaussian")
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    print(
        f"sliding-window inference: volume {tuple(args.volume)}, window {tuple(patch)}, overlap 0.25, gaussian, "
        f"{device.type}: {min(times):.2f} s per volume (best of {len(times)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
