"""``medtl demo``: a real comparison on the bundled sample radiographs, on the CPU, offline.

ImageNet-pretrained MobileNetV2 (torchvision's real weights, imported into the cache by ``make weights``)
against the same network trained from scratch. The quick default fits in a few minutes on two cores;
``full=True`` runs more seeds, label fractions and epochs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medtl.errors import MedtlError
from medtl.evaluate.compare import CompareResult, compare, load_compare_config

__all__ = ["demo_config", "find_sample_data", "run_demo", "FULL_OVERRIDES"]

FULL_OVERRIDES: dict[str, Any] = {
    "compare.seeds": 3,
    "compare.fractions": [0.1, 0.25, 0.5, 1.0],
    "train.epochs": 8,
    "preprocess.size": [96, 96],
}


def find_sample_data(start: str | Path | None = None) -> Path:
    """The ``sample_data`` folder: ``$MEDTL_SAMPLE_DATA``, else ./sample_data, else next to the medtl package."""
    candidates = []
    if os.environ.get("MEDTL_SAMPLE_DATA"):
        candidates.append(Path(os.environ["MEDTL_SAMPLE_DATA"]))
    if start is not None:
        candidates.append(Path(start))
    candidates += [Path.cwd() / "sample_data", Path(__file__).resolve().parents[2] / "sample_data"]
    for c in candidates:
        if (c / "xray" / "manifest.csv").is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise MedtlError(
        f"sample data not found (looked for xray/manifest.csv in {tried}); run `make sample-data` "
        "(python sample_data/generate.py) in the medtl repository, or set MEDTL_SAMPLE_DATA"
    )


def demo_config(sample_data: str | Path | None = None) -> dict[str, Any]:
    """The built-in demo config as a dict, with the manifest path made absolute."""
    root = find_sample_data(sample_data)
    raw = yaml.safe_load(resources.files("medtl.resources").joinpath("demo_xray.yaml").read_text())
    raw["data"]["manifest"] = str((root / raw["data"]["manifest"]).resolve())
    return raw


def run_demo(
    *,
    full: bool = False,
    out_dir: str | Path | None = None,
    sample_data: str | Path | None = None,
    on_event: Callable[[str], None] | None = None,
) -> CompareResult:
    """Run the demo comparison and write its report.

    Args:
        full: more seeds (3), label fractions (10, 25, 50, 100%) and epochs.
        out_dir: comparison folder (default ``runs/demo`` or ``runs/demo-full``).
        sample_data: the sample_data folder (default: found automatically).
        on_event: progress messages.
    """
    import torch

    # two cores are shared with the data pipeline; more threads only contend
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    raw = demo_config(sample_data)
    overrides = dict(FULL_OVERRIDES) if full else {}
    cfg = load_compare_config(raw, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / ("demo-full" if full else "demo")
    return compare(cfg, out_dir=out, on_event=on_event)
