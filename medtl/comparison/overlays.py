"""Example overlays of a segmentation comparison: each arm's predicted masks over test scans, in the report.

For each arm, the overlay PNGs (``overlays/*.png``, written by a segmentation run through
:meth:`medtl.rundir.RunDir.overlays`) of its first successful run (lowest seed) at the largest label
fraction are copied to ``<comparison folder>/overlays/<arm>/``, so report.md links files inside the folder
and the folder can be moved or shared as a whole; report.html embeds them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medtl.comparison.results import CompareResults

__all__ = ["collect_overlays", "OVERLAY_DIR"]

#: Folder of the copied overlays inside the comparison folder.
OVERLAY_DIR = "overlays"


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

    out = Path(compare_dir)
    found: dict[str, list[str]] = {}
    if not results.fractions:
        return found
    largest = max(results.fractions)
    for arm in results.arms:
        target = out / OVERLAY_DIR / arm.name
        if target.is_dir():  # from an earlier report: the first successful run may have changed since
            shutil.rmtree(target)
        runs = sorted(
            (r for r in results.runs if r.arm == arm.name and r.ok and abs(r.fraction - largest) < 1e-9 and r.run_dir),
            key=lambda r: r.seed,
        )
        if not runs:
            continue
        pngs = RunDir(runs[0].run_dir).overlays()
        if not pngs:
            continue
        target.mkdir(parents=True, exist_ok=True)
        copied = []
        for png in pngs:
            shutil.copyfile(png, target / png.name)
            copied.append((target / png.name).relative_to(out).as_posix())
        found[arm.name] = copied
    return found
