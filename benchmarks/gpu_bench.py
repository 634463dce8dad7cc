"""GPU training throughput of a MedicalNet-style 3D ResNet-18 at 128^3: fp32 vs bf16 autocast, channels_last_3d.

For the device machine (one H100/H200); also runs on the CPU at a tiny size to check it works:

    .venv/bin/python benchmarks/gpu_bench.py                       # CUDA: 128^3, batch 8
    .venv/bin/python benchmarks/gpu_bench.py --device cpu --size 16 --batch-size 2 --steps 2

Prints samples/s and peak memory per configuration (forward, backward, AdamW step on random tensors). The
end-to-end rate over this model-only rate is measured by bench_train.py (CPU) and gpu_check.py (GPU: ResNet-18
3D at 128^3 and MobileNetV2 at 224, bf16 + channels_last through ``fine_tune``).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool, steps: int) -> tuple[float, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dev = x.device

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (cuDNN autotuning)
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    return steps * x.shape[0] / seconds, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet18_3d")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    from medtl.models import create_model

    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    else:
        print(f"device: cpu, torch {torch.__version__}")
    s = args.size
    print(f"{args.arch} (MedicalNet layout, 1 channel), input {s}^3, batch {args.batch_size}, {args.steps} steps")
    print(f"{'configuration':34}{'samples/s':>11}{'peak GiB':>10}")
    for bf16 in (False, True):
        for cl in (False, True):
            torch.manual_seed(0)
            model = create_model(args.arch, weights="scratch", in_channels=1, num_classes=2, spatial_dims=3).to(dev)
            x = torch.randn(args.batch_size, 1, s, s, s, device=dev)
            if cl:
                model = model.to(memory_format=torch.channels_last_3d)
                x = x.contiguous(memory_format=torch.channels_last_3d)
            y = torch.randint(0, 2, (args.batch_size,), device=dev)
            rate, peak = run(model.train(), x, y, bf16=bf16, steps=args.steps)
            name = ("bf16 autocast" if bf16 else "fp32") + (", channels_last_3d" if cl else "")
            print(f"{name:34}{rate:>11.2f}{peak:>10.2f}")
            del model, x
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
