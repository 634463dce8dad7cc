"""Helpers of the export tests: subsets of the sample data, tiny configs, a bundle run with medtl out of reach."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


def sample_subset(src: Path, dest: Path, n: int) -> Path:
    """The first ``n`` rows of a sample manifest, with absolute paths, as ``dest``."""
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    for r in rows:
        for key in ("image", "mask"):
            if r.get(key):
                r[key] = str((src.parent / r[key]).resolve())
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dest


def tiny_config(manifest: Path, out: Path, name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data": {"manifest": str(manifest)},
        "splits": {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"arch": "resnet18", "weights": "scratch"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "num_workers": 0},
        "augment": {"enabled": False},
        "output": {"dir": str(out), "name": name},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


#: runs a MONAI bundle with ``import medtl`` made impossible: what it needs must come from MONAI and PyTorch alone
_BUNDLE_RUNNER = """
import sys
sys.modules["medtl"] = None
from monai.bundle import run
bundle, out = sys.argv[1], sys.argv[2]
run(run_id="run", config_file=bundle + "/configs/inference.json", meta_file=bundle + "/configs/metadata.json",
    bundle_root=bundle, datalist=sys.argv[3:], output_dir=out)
"""


def run_bundle_without_medtl(bundle: Path, scans: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """``monai.bundle.run`` of the bundle's inference config on ``scans``, in a process that cannot import medtl."""
    proc = subprocess.run(
        [sys.executable, "-c", _BUNDLE_RUNNER, str(bundle), str(out), *scans],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(bundle.parent),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def split_scans(run_dir: Path) -> list[str]:
    """The images of a run's test split (its predictions_test.csv)."""
    with open(run_dir / "predictions_test.csv", newline="") as fh:
        return [r["image"] for r in csv.DictReader(fh)]
