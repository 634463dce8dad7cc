"""Label maps for the NIfTI CT phantoms of ``sample_data/ct_nifti``: a segmentation task on the same scans.

Run from the repository root::

    python sample_data/masks.py            # rewrites sample_data/ct_nifti_masks
    python sample_data/masks.py --out DIR  # writes DIR/ct_nifti_masks

The masks come from replaying ``generate.py``'s NIfTI CT task with the same seed: the same random draws build
the same phantoms, and :func:`ct_phantom`'s ``labels_out`` returns their label map (0 background, 1 lung,
2 nodule: voxels at least half inside the soft-edged shape). Each mask is a uint8 NIfTI on its image's grid and
affine. ``manifest.csv`` lists ``image`` (``../ct_nifti/<name>``), ``mask``, ``label`` (``nodule`` or
``no_nodule``, for stratified splits) and ``patient_id``. ``tests/segmentation/test_masks.py`` checks that a fresh
run equals the committed files.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TASK = "ct_nifti_masks"
CLASSES = ("background", "lung", "nodule")


def _generator():
    if "medtl_sample_generate" in sys.modules:
        return sys.modules["medtl_sample_generate"]
    # sample_data/ is a data folder with its scripts, not a package: load generate.py by path
    spec = importlib.util.spec_from_file_location("medtl_sample_generate", HERE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_ct_masks(out: Path, seed: int | None = None) -> list[dict[str, str]]:
    """Write the label maps of the NIfTI CT task into ``out`` and its ``manifest.csv``; returns the rows."""
    import nibabel as nib

    gen = _generator()
    seed = gen.SEED if seed is None else seed
    # the same draws, in the same order, as generate.write_ct_nifti
    rng = np.random.default_rng([seed, 2])
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for st in gen._plan_ct(rng, "NII", n_patients=44, n_second=4):
        labels: dict[str, np.ndarray] = {}
        gen.ct_phantom(rng, st.shape, st.spacing, st.label == "positive", labels_out=labels)
        lps_origin = np.array([-st.shape[0] / 2 * st.spacing[0], -st.shape[1] / 2 * st.spacing[1], -150.0])
        affine = np.diag([-st.spacing[0], -st.spacing[1], st.spacing[2], 1.0])
        affine[:3, 3] = lps_origin * np.array([-1.0, -1.0, 1.0])
        img = nib.Nifti1Image(labels["labels"], affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        name = f"{gen.random_name(rng)}.nii.gz"
        (out / name).write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
        rows.append(
            {
                "image": f"../ct_nifti/{name}",
                "mask": name,
                "label": "nodule" if st.label == "positive" else "no_nodule",
                "patient_id": st.patient,
            }
        )
    rows.sort(key=lambda r: r["mask"])
    gen._write_csv(out / "manifest.csv", rows, ["image", "mask", "label", "patient_id"])
    return rows


def generate(out: str | Path = HERE, seed: int | None = None) -> Path:
    """Write ``out/ct_nifti_masks`` (replacing an earlier copy); returns the folder."""
    folder = Path(out) / TASK
    if folder.exists():
        shutil.rmtree(folder)
    write_ct_masks(folder, seed)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write ct_nifti_masks into")
    args = parser.parse_args(argv)
    folder = generate(args.out)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{TASK}: {folder} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
