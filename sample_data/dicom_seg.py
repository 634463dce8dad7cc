"""A DICOM SEG for one DICOM CT phantom series of ``sample_data/ct``: the same segmentation task as
``ct_nifti_masks``, with the mask stored the way PACS and viewers keep it.

Run from the repository root, after ``generate.py`` has written ``ct``::

    python sample_data/dicom_seg.py            # writes sample_data/ct_seg
    python sample_data/dicom_seg.py --out DIR  # writes DIR/ct_seg from DIR/ct

The label map (0 background, 1 lung, 2 nodule: voxels at least half inside the soft-edged shape, as in
``masks.py``) comes from replaying ``generate.py``'s DICOM CT task with the same seed up to the first study with a
nodule: the same random draws build the same phantom, and :func:`ct_phantom`'s ``labels_out`` returns its labels.
The SEG (BINARY, segments 1 "lung" and 2 "nodule", algorithm type MANUAL: a reference mask) references every slice
of that series; its frames are placed from the series' own ImagePositionPatient values. UIDs are derived by
hashing and the dates, times and file meta are fixed, so two runs write identical files. ``manifest.csv`` lists
``image`` (``../ct/<folder>``), ``mask``, ``label`` and ``patient_id``.

Needs highdicom (``pip install 'medtl[seg]'``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by path: generate.py is the sibling module
    sys.path.insert(0, str(HERE))

import generate as gen  # noqa: E402

TASK = "ct_seg"
CLASSES = ("background", "lung", "nodule")
# the date every sample file carries: the SEG's content and series dates do not follow the clock
FIXED_DATE, FIXED_TIME = "20240101", "120000"


def first_nodule_study(seed: int | None = None) -> tuple[object, str, np.ndarray]:
    """Replay ``generate.write_ct_dicom``'s draws up to its first study with a nodule.

    Returns:
        ``(study, folder, labels)``: the ``CTStudy``, the series folder name under ``ct/`` and the label map
        indexed like the phantom, ``[i, j, k]`` = (DICOM column, row, slice in ascending z).
    """
    seed = gen.SEED if seed is None else seed
    rng = np.random.default_rng([seed, 1])
    for st in gen._plan_ct(rng, "SYN-CT", n_patients=44, n_second=10):
        labels: dict[str, np.ndarray] = {}
        gen.ct_phantom(rng, st.shape, st.spacing, st.label == "positive", labels_out=labels)
        folder = gen.random_name(rng)
        if st.label == "positive":
            return st, folder, labels["labels"]
        # the rest of write_ct_dicom's draws for this series: sign, extension, order, table position, file names
        rng.integers(2), rng.integers(2), rng.integers(2), rng.uniform(-200, -100)
        for _ in range(st.shape[2]):
            gen.random_name(rng)
    raise RuntimeError("the DICOM CT task has no study with a nodule")


def write_ct_seg(out: Path, seed: int | None = None, ct_dir: Path | None = None) -> list[dict[str, str]]:
    """Write the SEG of the first DICOM CT study with a nodule into ``out`` and its ``manifest.csv``.

    Args:
        out: the folder to write (``ct_seg``).
        seed: ``generate.py``'s seed (default its ``SEED``).
        ct_dir: the DICOM CT task written with that seed (default ``out``'s sibling ``ct``).

    Returns:
        The manifest rows.
    """
    import pydicom

    from medtl.io.dicom_seg_write import build_dicom_seg

    seed = gen.SEED if seed is None else seed
    ct_dir = Path(ct_dir) if ct_dir is not None else Path(out).parent / "ct"
    st, folder, labels = first_nodule_study(seed)
    series_dir = ct_dir / folder
    sources = sorted(
        (pydicom.dcmread(str(f), stop_before_pixels=True) for f in series_dir.iterdir() if f.is_file()),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    series_uid = gen.make_uid("ct", st.patient, st.study_index, "series")
    if not sources or any(str(ds.SeriesInstanceUID) != series_uid for ds in sources):
        raise RuntimeError(f"{series_dir} is not the series generate.py writes with seed {seed}; regenerate ct first")
    # voxel (i, j, k) lies at LPS (x0 + i*sx, y0 + j*sy, z_k): the affine from the first slice's own position
    x0, y0, z0 = (float(v) for v in sources[0].ImagePositionPatient)
    affine = np.diag([-st.spacing[0], -st.spacing[1], st.spacing[2], 1.0])
    affine[:3, 3] = [-x0, -y0, z0]
    seg = build_dicom_seg(
        labels,
        affine,
        sources,
        classes=list(CLASSES),
        algorithm_version="sample_data",
        series_uid=gen.make_uid("ct", st.patient, st.study_index, "seg-series"),
        sop_uid=gen.make_uid("ct", st.patient, st.study_index, "seg"),
        series_number=300,
        series_description="lung and nodule (sample_data)",
        manufacturer="medtl sample_data",
        software_version=gen.IMPLEMENTATION_VERSION,
        segment_creator="MANUAL",
    )
    # fixed where highdicom would take the clock or a fresh UID
    seg.ContentDate, seg.ContentTime = FIXED_DATE, FIXED_TIME
    for keyword in ("SeriesDate", "InstanceCreationDate"):
        if keyword in seg:
            setattr(seg, keyword, FIXED_DATE)
    for keyword in ("SeriesTime", "InstanceCreationTime"):
        if keyword in seg:
            setattr(seg, keyword, FIXED_TIME)
    for i, item in enumerate(seg.get("DimensionOrganizationSequence") or []):
        item.DimensionOrganizationUID = gen.make_uid("ct", st.patient, st.study_index, "seg-dimensions", i)
    for item in seg.get("DimensionIndexSequence") or []:
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = gen.make_uid("ct", st.patient, st.study_index, "seg-dimensions", 0)
    # highdicom names itself, with its version and the clock, as contributing equipment: left out, so the bytes
    # do not depend on the installed highdicom
    equipment = seg.get("ContributingEquipmentSequence")
    if equipment is not None:
        kept = [item for item in equipment if "ContributionDateTime" not in item]
        if kept:
            seg.ContributingEquipmentSequence = kept
        else:
            del seg.ContributingEquipmentSequence
    seg.file_meta.ImplementationClassUID = gen.IMPLEMENTATION_CLASS_UID
    seg.file_meta.ImplementationVersionName = gen.IMPLEMENTATION_VERSION
    name = f"{folder}_seg.dcm"
    out.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(out / name), enforce_file_format=True)
    rows = [{"image": f"../ct/{folder}", "mask": name, "label": "nodule", "patient_id": st.patient}]
    gen._write_csv(out / "manifest.csv", rows, ["image", "mask", "label", "patient_id"])
    return rows


def generate(out: str | Path = HERE, seed: int | None = None) -> Path:
    """Write ``out/ct_seg`` from ``out/ct`` (replacing an earlier copy); returns the folder."""
    folder = Path(out) / TASK
    if folder.exists():
        shutil.rmtree(folder)
    write_ct_seg(folder, seed, Path(out) / "ct")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder holding ct/, to write ct_seg into")
    args = parser.parse_args(argv)
    folder = generate(args.out)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{TASK}: {folder} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
