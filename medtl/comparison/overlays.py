"""Example pictures of each arm in the report: a segmentation comparison's overlays (predicted masks over test scans),
a classification comparison's saliency maps (where the models look, on the same test patients).

For each arm, the overlay PNGs (``overlays/*.png``, written by a segmentation run through
:meth:`medtl.rundir.RunDir.overlays`) of its first successful run (lowest seed) at the largest label
fraction are copied to ``<comparison folder>/overlays/<arm>/``, so report.md links files inside the folder
and the folder can be moved or shared as a whole; report.html embeds them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from medtl.comparison.results import CompareResults

__all__ = ["collect_overlays", "collect_saliency", "OVERLAY_DIR", "SALIENCY_DIR"]

#: Folder of the copied overlays inside the comparison folder.
OVERLAY_DIR = "overlays"
#: Folder of the copied saliency maps inside the comparison folder (and inside each classification run's folder).
SALIENCY_DIR = "saliency"


def collect_overlays(results: CompareResults, compare_dir: str | Path) -> dict[str, list[str]]:
    """Copy each arm's example overlays into ``compare_dir/overlays/<arm>/``.

    Args:
        results: the runs of a segmentation comparison.
        compare_dir: the comparison folder.

    Returns:
        arm name -> the copied PNGs' paths relative to ``compare_dir`` (POSIX), sorted by name; an arm whose
        run wrote no overlays (or that has no successful run at the largest fraction) is absent.
    """
    from medtl.rundir import RunDir

    return _collect(results, compare_dir, OVERLAY_DIR, lambda run_dir: RunDir(run_dir).overlays())


def collect_saliency(results: CompareResults, compare_dir: str | Path) -> dict[str, list[str]]:
    """Copy each arm's saliency maps (``saliency/*_saliency.png`` of its first successful run at the largest label
    fraction: the same first test patients in every arm, drawn by
    :meth:`~medtl.tasks.classification.ClassificationTask.write_extras`) into ``compare_dir/saliency/<arm>/``.

    Returns:
        arm name -> the copied PNGs' paths relative to ``compare_dir`` (POSIX), sorted by name; arms without maps
        are absent.
    """

    def maps(run_dir: str) -> list[Path]:
        folder = Path(run_dir) / SALIENCY_DIR
        return sorted(folder.glob("*_saliency.png")) if folder.is_dir() else []

    return _collect(results, compare_dir, SALIENCY_DIR, maps)


def _collect(
    results: CompareResults, compare_dir: str | Path, folder: str, pngs_of: Callable[[str], list[Path]]
) -> dict[str, list[str]]:
    """Copy ``pngs_of(run folder)`` of each arm's first successful run (lowest seed) at the largest label fraction
    into ``compare_dir/<folder>/<arm>/``."""
    out = Path(compare_dir)
    found: dict[str, list[str]] = {}
    if not results.fractions:
        return found
    largest = max(results.fractions)
    for arm in results.arms:
        target = out / folder / arm.name
        if target.is_dir():  # from an earlier report: the first successful run may have changed since
            shutil.rmtree(target)
        runs = sorted(
            (r for r in results.runs if r.arm == arm.name and r.ok and abs(r.fraction - largest) < 1e-9 and r.run_dir),
            key=lambda r: r.seed,
        )
        if not runs:
            continue
        pngs = pngs_of(runs[0].run_dir)
        if not pngs:
            continue
        target.mkdir(parents=True, exist_ok=True)
        copied = []
        for png in pngs:
            shutil.copyfile(png, target / png.name)
            copied.append((target / png.name).relative_to(out).as_posix())
        found[arm.name] = copied
    return found
