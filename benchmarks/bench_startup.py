"""Time to the first epoch: ``medtl train`` against the import of its libraries and a plain PyTorch script.

Every contender is a whole new process, started from here; the rounds alternate the contenders (so a slower
minute of a shared machine hits them all) and the table gives each one's median and range over the rounds, in
seconds from the process start:

* ``import torch``, ``+ torchvision``, ``+ lightning, monai``: the floor of any program built on them;
* **plain**: a PyTorch + torchvision + pydicom script (below) that reads the sample radiographs, scales them to
  128 px, builds torchvision's MobileNetV2 with its ImageNet weights and trains one epoch (batch 16, AdamW), all
  data in memory; no Lightning, no MONAI;
* **medtl**: ``medtl train configs/xray_mobilenet_imagenet.yaml --epochs 1``; its epoch starts when Lightning's
  fit starts (the epoch line's ``time_s`` counts from there, read from ``metrics.csv``).

Run it after ``make weights`` (ImageNet MobileNetV2 in ``MEDTL_HOME`` and ``TORCH_HOME``):

    MEDTL_HOME=.cache/medtl TORCH_HOME=.cache/torch .venv/bin/python benchmarks/bench_startup.py
    ... benchmarks/bench_startup.py --python /path/to/other/venv/bin/python    # another installation of medtl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/xray_mobilenet_imagenet.yaml"

PLAIN = r"""
import csv, sys, time
from pathlib import Path
import numpy as np, pydicom, torch, torch.nn.functional as F, torchvision
print("imported", time.time(), flush=True)
manifest = Path(sys.argv[1])
rows = list(csv.DictReader(open(manifest)))
classes = sorted({r["label"] for r in rows})
images = []
for r in rows:
    a = pydicom.dcmread(manifest.parent / r["image"]).pixel_array.astype(np.float32)
    a = torch.from_numpy((a - a.min()) / max(float(a.max() - a.min()), 1e-6))
    images.append(F.interpolate(a[None, None], size=(128, 128), mode="area")[0].expand(3, -1, -1))
mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
x = (torch.stack(images) - mean) / std
y = torch.tensor([classes.index(r["label"]) for r in rows])
net = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
net.classifier[-1] = torch.nn.Linear(net.last_channel, len(classes))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
print("epoch start", time.time(), flush=True)
net.train()
for i in torch.randperm(len(x)).split(16):
    opt.zero_grad()
    F.cross_entropy(net(x[i]), y[i]).backward()
    opt.step()
print("epoch end", time.time(), flush=True)
"""

IMPORTS = {
    "import torch": "torch",
    "import torch, torchvision": "torch, torchvision",
    "import torch, torchvision, lightning, monai": "torch, torchvision, lightning, monai",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MEDTL_HOME", str(ROOT / ".cache/medtl"))
    env.setdefault("TORCH_HOME", str(ROOT / ".cache/torch"))
    return env


def time_import(python: str, modules: str) -> float:
    t0 = time.time()
    subprocess.run([python, "-c", f"import {modules}"], check=True, env=_env(), capture_output=True)
    return time.time() - t0


def time_plain(python: str, script: Path) -> dict[str, float]:
    t0 = time.time()
    out = subprocess.run(
        [python, str(script), str(ROOT / "sample_data/xray/manifest.csv")],
        check=True,
        env=_env(),
        capture_output=True,
        text=True,
    ).stdout
    marks = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line[:1].isalpha()}
    return {"epoch start": marks["epoch start"] - t0, "epoch end": marks["epoch end"] - t0}


def time_medtl(python: str, out_dir: Path) -> dict[str, float]:
    """Seconds to the first output line, to the start of epoch 1 (Lightning's fit start) and to its end line."""
    cli = "import sys; from medtl.cli import main; sys.argv[0] = 'medtl'; sys.exit(main())"
    cmd = [python, "-c", cli, "train", str(CONFIG), "--epochs", "1", "--set", f"output.dir={out_dir}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = epoch_line = None
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.time() - t0
        first = first if first is not None else now
        if line.startswith("epoch 1/1") and epoch_line is None:
            epoch_line = now
    if proc.wait() != 0 or epoch_line is None:
        raise RuntimeError(f"medtl train failed (run it by hand to see its error): {' '.join(cmd)}")
    (metrics,) = out_dir.glob("*/metrics.csv")
    fit_s = float(next(csv.DictReader(open(metrics)))["time_s"])  # epoch 1's end, counted from the fit's start
    return {"first line": first, "epoch start": epoch_line - fit_s, "epoch end": epoch_line}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the installation to time")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write every measurement here")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "plain.py"
        script.write_text(PLAIN)
        for r in range(args.rounds):
            for name, modules in IMPORTS.items():
                times.setdefault(name, []).append(time_import(args.python, modules))
            for k, v in time_plain(args.python, script).items():
                times.setdefault(f"plain: {k}", []).append(v)
            for k, v in time_medtl(args.python, Path(tmp) / f"runs{r}").items():
                times.setdefault(f"medtl train: {k}", []).append(v)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"python: {args.python}; {os.cpu_count()} cores; load average before: {load_before:.2f}")
    print("\n| seconds from the process start | median | range |\n|---|---|---|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.2f} | {min(v):.2f}-{max(v):.2f} |")
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["import torch, torchvision, lightning, monai"]
    print(
        f"\nmedtl's epoch start / its libraries' import: {med['medtl train: epoch start'] / floor:.2f}x; "
        f"/ the plain script's epoch start: {med['medtl train: epoch start'] / med['plain: epoch start']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps({"python": args.python, "times": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
