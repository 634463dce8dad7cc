"""``medtl demo``: a real comparison on generated chest radiographs, on the CPU, offline.

ImageNet-pretrained MobileNetV2 (torchvision's real weights, imported into the cache by ``make weights``)
against the same network trained from scratch. The demo writes its own data first
(:mod:`medtl.resources.demo_data`: a few hundred synthetic radiographs as DICOM files, the same bytes on
every machine) into ``<comparison folder>/data``: enough test patients that the paired interval at 100%
labels is narrow enough to answer the demo's question, where the 52 committed sample radiographs
(16 test patients) could not. ``full=True`` runs more seeds, label fractions and epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medtl.comparison.compare import ComparisonReport, compare, load_compare_config
from medtl.resources.demo_data import DEMO_SEED, ensure_demo_data

__all__ = ["demo_config", "demo_data_settings", "prepare_demo_data", "run_demo", "FULL_OVERRIDES"]

FULL_OVERRIDES: dict[str, Any] = {
    "compare.fractions": [0.1, 0.25, 0.5, 1.0],
    "train.epochs": 10,
    "preprocess.size": [96, 96],
}


def _raw_config() -> dict[str, Any]:
    return yaml.safe_load(resources.files("medtl.resources").joinpath("demo_xray.yaml").read_text())


def demo_data_settings() -> dict[str, Any]:
    """The ``demo_data`` section of the built-in config: ``patients``, ``image_size`` (smallest, largest), ``seed``."""
    d = dict(_raw_config().get("demo_data") or {})
    d.setdefault("seed", DEMO_SEED)
    return d


def prepare_demo_data(folder: str | Path) -> Path:
    """Write (or reuse) the demo's radiographs in ``folder``; returns their ``manifest.csv``."""
    s = demo_data_settings()
    return ensure_demo_data(folder, int(s["patients"]), seed=int(s["seed"]), size=tuple(s["image_size"]))


def demo_config(manifest: str | Path) -> dict[str, Any]:
    """The built-in demo config as a dict (without its ``demo_data`` section), reading ``manifest``."""
    raw = _raw_config()
    raw.pop("demo_data", None)
    raw["data"]["manifest"] = str(Path(manifest).resolve())
    return raw


def run_demo(
    *,
    full: bool = False,
    out_dir: str | Path | None = None,
    on_event: Callable[[str], None] | None = None,
) -> ComparisonReport:
    """Write the demo data, run the demo comparison and write its report.

    Args:
        full: label fractions 10, 25, 50 and 100% (the quick demo: 100% only), 10 epochs, 96 px.
        out_dir: comparison folder (default ``runs/demo`` or ``runs/demo-full``); the generated radiographs
            go to its ``data`` folder and are reused by the next call.
        on_event: progress messages.
    """
    say = on_event or (lambda msg: None)
    out = Path(out_dir) if out_dir is not None else Path("runs") / ("demo-full" if full else "demo")
    s = demo_data_settings()
    say(f"demo data: {s['patients']} synthetic radiographs (DICOM) in {out / 'data'}")
    manifest = prepare_demo_data(out / "data")
    overrides = dict(FULL_OVERRIDES) if full else {}
    cfg = load_compare_config(demo_config(manifest), overrides)
    return compare(cfg, out_dir=out, on_event=on_event)
