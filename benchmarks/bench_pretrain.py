"""Does pretraining on unlabeled scans help? Pretrain on an unlabeled pool, then compare four starting points.

1. Writes an unlabeled pool of radiograph phantoms (``sample_data/unlabeled.py``; none of them in the labelled
   sample task) unless ``--pool`` names one.
2. Pretrains MobileNetV2 on it twice, from scratch ("self") and from ImageNet ("imagenet+self"), with
   ``--method`` (simclr or genesis), and prints the loss and a k-NN score on the labelled radiographs
   (``sample_data/xray``) per pretraining.
3. Unless ``--skip-compare``: runs ``medtl.compare`` on ``configs/compare_xray.yaml`` with four arms, scratch /
   imagenet / self / imagenet+self, at 10% and 100% of the training labels, and prints its table.

    .venv/bin/python benchmarks/bench_pretrain.py --skip-compare               # pretraining only
    .venv/bin/python benchmarks/bench_pretrain.py --method genesis --seeds 3   # the whole comparison

The numbers are whatever the run gives; they are quoted in benchmarks/README.md whichever arm wins.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARCH = "mobilenet_v2"


def _pool(args: argparse.Namespace, work: Path) -> Path:
    if args.pool is not None:
        return Path(args.pool)
    out = work / "unlabeled"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "sample_data" / "unlabeled.py"), str(out), "--n2d", str(args.n), "--n3d", "0"],
        check=True,
        capture_output=True,
    )
    print(f"unlabeled pool: {args.n} radiographs in {time.perf_counter() - t0:.1f}s ({out / 'xray'})", flush=True)
    return out / "xray" / "manifest.csv"


def _pretrain(args: argparse.Namespace, manifest: Path, start: str, name: str, work: Path) -> Any:
    from medtl.pretraining import pretrain

    config = {
        "data": {"manifest": str(manifest), "mode": "2d"},
        "preprocess": {"size": [args.size, args.size]},  # the compare config's input size
        "model": {"arch": ARCH, "weights": start},
        "method": args.method,
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "num_workers": args.num_workers,
            "cache": "memory",
        },
        "knn": {"manifest": str(ROOT / "sample_data" / "xray" / "manifest.csv"), "every": max(1, args.epochs // 2)},
        "output": {"dir": str(work / "pretrain"), "name": name, "overwrite": True},
    }
    return pretrain(config)


def _wire_local_sources(names: list[str]) -> None:
    """Make ``local:<name>`` resolve in training and compare, if medtl's weight sources do not yet do it.

    A stand-in for the two-line hook in ``medtl.weights.sources.get_weight_source``: every medtl module that
    imported that function gets a wrapper that answers ``local:`` names from :mod:`medtl.weights.local`.
    """
    from medtl.errors import UnknownOptionError
    from medtl.weights import sources
    from medtl.weights.local import local_weight_source

    original = sources.get_weight_source
    try:
        if original(names[0]).name == names[0]:
            return  # wired already
    except UnknownOptionError:
        pass

    def get_weight_source(name: Any) -> Any:
        if isinstance(name, str) and name.startswith("local:"):
            return local_weight_source(name)
        return original(name)

    import medtl.comparison.compare  # noqa: F401 - import the modules whose reference is replaced
    import medtl.models.create  # noqa: F401
    import medtl.train.experiment  # noqa: F401

    for module in list(sys.modules.values()):
        if (
            getattr(module, "__name__", "").startswith("medtl")
            and getattr(module, "get_weight_source", None) is original
        ):
            module.get_weight_source = get_weight_source  # type: ignore[attr-defined]
    print("note: local:<name> resolved by this script's stand-in (the weight-source hook is not wired yet)")


def _compare(args: argparse.Namespace, weights: dict[str, str], work: Path) -> Any:
    import yaml

    from medtl import compare

    config = yaml.safe_load((ROOT / "configs" / "compare_xray.yaml").read_text())
    config["data"]["manifest"] = str(ROOT / "sample_data" / "xray" / "manifest.csv")
    config["output"] = {"dir": str(work / "runs"), "name": "bench-pretrain"}
    config["train"]["epochs"] = args.compare_epochs
    config["compare"].update(
        arms=[
            {"name": "scratch", "label": "MobileNetV2 scratch", "model": {"weights": "scratch"}},
            {"name": "imagenet", "label": "MobileNetV2 ImageNet", "model": {"weights": "imagenet"}},
            {
                "name": "self",
                "label": f"self ({args.method}, {args.n} unlabeled)",
                "model": {"weights": weights["self"]},
            },
            {
                "name": "imagenet-self",
                "label": f"ImageNet + self ({args.method})",
                "model": {"weights": weights["imagenet+self"]},
            },
        ],
        seeds=args.seeds,
        fractions=[0.1, 1.0],
        dir=str(work / "compare"),
    )
    return compare(config, on_event=lambda msg: print(msg, flush=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, help="manifest of an unlabeled pool (default: write 300 phantoms)")
    ap.add_argument("--n", type=int, default=300, help="radiographs in the generated pool")
    ap.add_argument("--method", choices=("simclr", "genesis"), default="simclr")
    ap.add_argument("--epochs", type=int, default=10, help="pretraining epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, default=96, help="input size (compare_xray.yaml uses 96)")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the project machine has 2 shared cores)")
    ap.add_argument("--skip-compare", action="store_true", help="pretraining only")
    ap.add_argument("--seeds", type=int, default=1, help="compare seeds")
    ap.add_argument("--compare-epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, help="keep everything here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse encoders pretrained earlier into the same --out")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TORCH_HOME", str(ROOT / ".cache" / "torch"))
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDTL_HOME", str(work / "medtl-home"))
    manifest = _pool(args, work)

    from medtl.pretraining import list_local_sources

    rows = []
    weights: dict[str, str] = {}
    for arm, start in (("self", "scratch"), ("imagenet+self", "imagenet")):
        name = f"bench-{args.method}-{'in' if start == 'imagenet' else 'scratch'}"
        run = work / "pretrain" / name
        if args.reuse and f"local:{name}" in list_local_sources() and (run / "result.json").is_file():
            print(f"reusing {run}", flush=True)
            res = json.loads((run / "result.json").read_text())
            metrics = [
                {k: float(v) if v else float("nan") for k, v in row.items()}
                for row in csv.DictReader((run / "metrics.csv").read_text().splitlines())
            ]
            weights[arm], seconds, before = res["weights"], res["seconds"], res.get("knn_before")
        else:
            result = _pretrain(args, manifest, start, name, work)
            weights[arm], seconds, metrics = result.weights, result.seconds, result.metrics
            before = json.loads((result.run_dir / "result.json").read_text()).get("knn_before")
        knn = [r for r in metrics if r["knn_accuracy"] == r["knn_accuracy"]]
        rows.append(
            (
                arm,
                start,
                len(metrics),
                metrics[0]["train_loss"],
                metrics[-1]["train_loss"],
                before["knn_balanced_accuracy"] if before else float("nan"),
                knn[-1]["knn_balanced_accuracy"] if knn else float("nan"),
                seconds,
            )
        )
    print()
    print(f"pretraining {ARCH} with {args.method} on {args.n} unlabeled radiographs ({args.size} px), CPU")
    print(f"{'arm':<15}{'start':<10}{'epochs':>7}{'loss 1st':>10}{'loss last':>10}{'kNN 0':>8}{'kNN end':>9}{'s':>8}")
    for arm, start, ep, l0, l1, k0, k1, sec in rows:
        print(f"{arm:<15}{start:<10}{ep:>7}{l0:>10.4f}{l1:>10.4f}{k0:>8.3f}{k1:>9.3f}{sec:>8.0f}")
    print(
        "(kNN: balanced accuracy of a k-NN on the encoder's features of the labelled sample radiographs, "
        "cross-validated by patient; kNN 0: the starting weights, before pretraining)"
    )
    if args.skip_compare:
        return 0

    _wire_local_sources(list(weights.values()))
    result = _compare(args, weights, work)
    print()
    print(f"compare: report {result.report}")
    for sentence in result.sentences():
        print(" ", sentence)
    return 0


if __name__ == "__main__":
    sys.exit(main())
