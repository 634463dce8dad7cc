"""Write an unlabeled pool of small phantoms for ``medtl pretrain``: 2D radiographs and 3D CT volumes.

Not committed: generate it where you need it (a few seconds)::

    python sample_data/unlabeled.py OUT                       # 300 radiographs, 100 CT volumes
    python sample_data/unlabeled.py OUT --n2d 600 --n3d 0     # radiographs only

Writes ``OUT/xray/`` (2D DICOM radiographs, DX, one patient each; 2D NIfTI would read back as a one-slice volume)
and ``OUT/ct/`` (NIfTI CT volumes in HU, RAS affine), each with a ``manifest.csv`` holding only an ``image``
column. The phantoms are those of ``generate.py`` (the labelled sample tasks) drawn from another seed, with and
without the lesions, so the pool looks like the labelled data without sharing a single image with it.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by path: generate.py is the sibling module
    sys.path.insert(0, str(HERE))

from generate import (  # noqa: E402
    IMPLEMENTATION_VERSION,
    _save,
    ct_phantom,
    xray_phantom,
)

from medtl.resources.demo_data import radiograph_dataset  # noqa: E402

__all__ = ["write_unlabeled", "main"]

SEED = 20261201


def _manifest(folder: Path, names: list[str]) -> Path:
    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image"])
        w.writerows([n] for n in sorted(names))
    return path


def write_xray_pool(out: Path, n: int, seed: int = SEED) -> list[str]:
    """``n`` 2D DICOM radiographs (96-128 px, 12-bit, DX) in ``out``."""
    rng = np.random.default_rng([seed, 3])
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        patient = f"UNL-XR-{i + 1:04d}"
        shape = (int(rng.integers(48, 65)) * 2, int(rng.integers(48, 65)) * 2)
        att = xray_phantom(rng, shape, bool(rng.integers(2)))
        values = np.clip(np.rint(rng.uniform(150, 450) + rng.uniform(1800, 2600) * att), 0, 4095).astype(np.uint16)
        ds = radiograph_dataset(
            values,
            patient=patient,
            uid_prefix="unl-xr",
            study_date="20250101",
            modality="DX",
            monochrome1=False,
            name_prefix="Unlabeled",
            manufacturer="medtl sample_data",
            implementation_version=IMPLEMENTATION_VERSION,
        )
        name = f"{patient}.dcm"
        _save(ds, out / name)
        names.append(name)
    _manifest(out, names)
    return names


def write_ct_pool(out: Path, n: int, seed: int = SEED) -> list[str]:
    """``n`` NIfTI CT volumes (int16 HU, 32-40 x 32-40 x 16-20 voxels) in ``out``."""
    import nibabel as nib

    rng = np.random.default_rng([seed, 2])
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        side = int(rng.integers(16, 21)) * 2
        shape = (side, side, int(rng.integers(16, 21)))
        spacing = (float(rng.choice([0.7, 0.8, 0.86])),) * 2 + (float(rng.choice([2.0, 2.5, 3.0])),)
        hu = ct_phantom(rng, shape, spacing, bool(rng.integers(2))).astype(np.int16)
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
        affine[:3, 3] = [shape[0] / 2 * spacing[0], shape[1] / 2 * spacing[1], -150.0]
        img = nib.Nifti1Image(hu, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        name = f"UNL-CT-{i + 1:04d}.nii.gz"
        (out / name).write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
        names.append(name)
    _manifest(out, names)
    return names


def write_unlabeled(out: str | Path, n2d: int = 300, n3d: int = 100, seed: int = SEED) -> dict[str, Path]:
    """Write the pool under ``out``; returns the manifest of each part written (``xray``, ``ct``)."""
    out = Path(out)
    written = {}
    if n2d:
        write_xray_pool(out / "xray", n2d, seed)
        written["xray"] = out / "xray" / "manifest.csv"
    if n3d:
        write_ct_pool(out / "ct", n3d, seed)
        written["ct"] = out / "ct" / "manifest.csv"
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder to write into (xray/ and ct/ are created in it)")
    ap.add_argument("--n2d", type=int, default=300, help="2D radiographs (default 300)")
    ap.add_argument("--n3d", type=int, default=100, help="3D CT volumes (default 100)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    written = write_unlabeled(args.out, args.n2d, args.n3d, args.seed)
    for part, manifest in written.items():
        print(f"{part}: {manifest}")
    print(f"written in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
