"""Label maps for the sample phantoms: segmentation tasks on the same scans.

* ``ct_nifti_masks``: lungs and nodules of the NIfTI CT phantoms of ``sample_data/ct_nifti`` (3D);
* ``xray_masks``: the lung fields of the radiographs of ``sample_data/xray`` (2D), a manifest without labels.

Run from the repository root::

    python sample_data/masks.py                        # rewrites sample_data/ct_nifti_masks and xray_masks
    python sample_data/masks.py --out DIR              # writes DIR/ct_nifti_masks and DIR/xray_masks
    python sample_data/masks.py --task xray_masks      # only one of them

The masks come from replaying ``generate.py``'s NIfTI CT task with the same seed: the same random draws build
the same phantoms, and :func:`ct_phantom`'s ``labels_out`` returns their label map (0 background, 1 lung,
2 nodule: voxels at least half inside the soft-edged shape). Each mask is a uint8 NIfTI on its image's grid and
affine. ``manifest.csv`` lists ``image`` (``../ct_nifti/<name>``), ``mask``, ``label`` (``nodule`` or
``no_nodule``, for stratified splits) and ``patient_id``.

The X-ray masks replay ``generate.py``'s radiograph task the same way. ``xray_phantom`` draws its lung fields as
its 6th to 13th random numbers (after the centre and the body); :func:`xray_lung_fields` draws them again from a
copy of the generator's state, so the phantom itself is not touched, and the mask is the set of pixels at least
half inside a lung field (0 background, 1 lung). Each mask is a uint8 NIfTI on its radiograph's grid: medtl reads
a radiograph as ``(column x, row y)`` with the voxel-to-world affine ``diag(-2.8, -2.8, 1)`` (RAS, 2.8 mm pixels,
no position), and the mask is written as that array (one slice) with that affine. ``manifest.csv`` lists
``image`` (``../xray/<name>``), ``mask`` and ``patient_id`` and no label: the split is by patient, unstratified.
``tests/segmentation/test_masks.py`` checks that the masks fit their images.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by path: generate.py is the sibling module
    sys.path.insert(0, str(HERE))

import generate as gen  # noqa: E402

TASK = "ct_nifti_masks"
CLASSES = ("background", "lung", "nodule")
XRAY_TASK = "xray_masks"
XRAY_CLASSES = ("background", "lung")
TASKS = (TASK, XRAY_TASK)
# the radiographs' pixel spacing (generate.write_xray writes PixelSpacing 2.8 \\ 2.8)
XRAY_SPACING_MM = 2.8


def write_ct_masks(out: Path, seed: int | None = None) -> list[dict[str, str]]:
    """Write the label maps of the NIfTI CT task into ``out`` and its ``manifest.csv``; returns the rows."""
    import nibabel as nib

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


def xray_lung_fields(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """The lung-field label map (uint8, 1 in a lung, ``[row, column]``) of the ``xray_phantom`` that ``rng`` is about
    to draw; ``rng`` itself is left as it was.

    The draws replayed are ``xray_phantom``'s first thirteen, in its order: centre (2), body (3), then per side the
    lung field's centre and radii (4); the field is the same soft ellipse (edge 1.5 px), taken where at least half.
    """
    replay = np.random.Generator(type(rng.bit_generator)())
    replay.bit_generator.state = rng.bit_generator.state
    rows, cols = shape
    y, x = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    cx = cols / 2 + replay.uniform(-2, 2)
    cy = rows / 2 + replay.uniform(-2, 2)
    replay.uniform(0.42, 0.47), replay.uniform(0.55, 0.62), replay.uniform(0.45, 0.55)  # the body
    lungs = np.zeros(shape)
    for side in (-1, 1):
        lcx = cx + side * cols * replay.uniform(0.18, 0.21)
        lcy = cy - rows * replay.uniform(0.0, 0.05)
        lrx = cols * replay.uniform(0.13, 0.16)
        lry = rows * replay.uniform(0.28, 0.33)
        lungs = np.maximum(lungs, gen._soft_ellipse((x, y), (lcx, lcy), (lrx, lry), edge=1.5))
    return (lungs >= 0.5).astype(np.uint8)


def write_xray_masks(out: Path, seed: int | None = None) -> list[dict[str, str]]:
    """Write the lung-field masks of the radiograph task into ``out`` and its ``manifest.csv``; returns the rows.

    The same draws, in the same order, as ``generate.write_xray``; the radiographs are not written.
    """
    import nibabel as nib

    seed = gen.SEED if seed is None else seed
    rng = np.random.default_rng([seed, 3])
    n_patients = 52
    labels = [gen.CLASSES[i % 2] for i in range(n_patients)]
    rng.shuffle(labels)
    affine = np.diag([-XRAY_SPACING_MM, -XRAY_SPACING_MM, 1.0, 1.0])
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for p, label in enumerate(labels):
        patient = f"SYN-XR-{p + 1:03d}"
        shape = (int(rng.integers(48, 65)) * 2, int(rng.integers(48, 65)) * 2)
        lungs = xray_lung_fields(rng, shape)
        gen.xray_phantom(rng, shape, label == "positive")  # advances rng past this radiograph's draws
        rng.uniform(150, 450), rng.uniform(1800, 2600), rng.integers(2), rng.uniform()  # grey levels, modality
        name = f"{gen.random_name(rng)}{'.dcm' if rng.integers(2) else ''}"
        # medtl reads a radiograph as (column x, row y): the mask is that array, one slice deep
        img = nib.Nifti1Image(np.ascontiguousarray(lungs.T)[..., None], affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        mask = f"{Path(name).stem}.nii.gz"
        (out / mask).write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
        rows.append({"image": f"../xray/{name}", "mask": mask, "patient_id": patient})
    rows.sort(key=lambda r: r["mask"])
    gen._write_csv(out / "manifest.csv", rows, ["image", "mask", "patient_id"])
    return rows


WRITERS = {TASK: write_ct_masks, XRAY_TASK: write_xray_masks}


def generate(out: str | Path = HERE, seed: int | None = None, task: str = TASK) -> Path:
    """Write ``out/<task>`` (``ct_nifti_masks`` or ``xray_masks``), replacing an earlier copy; returns the folder."""
    if task not in WRITERS:
        raise ValueError(f"unknown mask task {task!r}; choose from {', '.join(TASKS)}")
    folder = Path(out) / task
    if folder.exists():
        shutil.rmtree(folder)
    WRITERS[task](folder, seed)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the mask task folders into")
    parser.add_argument("--task", action="append", choices=TASKS, help="write only this task (repeatable)")
    args = parser.parse_args(argv)
    for task in args.task or TASKS:
        folder = generate(args.out, task=task)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{task}: {folder} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
