"""Generate medtl's sample data: three small, deterministic two-class tasks written as real files.

Run from the repository root (``make sample-data`` does this)::

    python sample_data/generate.py            # rewrites sample_data/ct, ct_nifti, xray
    python sample_data/generate.py --out DIR  # writes DIR/ct, DIR/ct_nifti, DIR/xray

Every value comes from one seeded ``numpy.random.Generator`` per task and from UIDs derived by hashing,
so two runs write identical files (the test ``tests/test_sample_data.py`` checks the committed copy
against a fresh run). ``README.md`` next to this file says what distinguishes the classes.

The phantoms use only arithmetic and square roots on the random draws (no blurring or transcendental
functions whose last bits differ between platforms), so the rounded pixel values do not depend on the
machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# one drawing of the phantoms: the demo generates its radiographs with the same functions
from medtl.resources.demo_data import _soft_ellipse, derived_uid, radiograph_dataset, xray_phantom  # noqa: E402

__all__ = ["generate", "ct_phantom", "xray_phantom", "TASKS", "main"]

HERE = Path(__file__).resolve().parent
TASKS = ("ct", "ct_nifti", "xray")
SEED = 20261126
CLASSES = ("negative", "positive")

# File meta fixed here so the bytes do not depend on the installed pydicom version.
IMPLEMENTATION_CLASS_UID = "2.25.264532618102648383474718617040853432101"
IMPLEMENTATION_VERSION = "MEDTL_SAMPLE_1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


make_uid = derived_uid


def random_name(rng: np.random.Generator, n: int = 8) -> str:
    """A random-looking upper-case hex name, as scanners and PACS exports write them."""
    return "".join(rng.choice(list("0123456789ABCDEF"), size=n))


# --------------------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------------------


def ct_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    positive: bool,
    labels_out: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """A chest-like CT volume in Hounsfield units, indexed ``[i, j, k]`` = (column x, row y, slice z).

    Both classes: air, an elliptical body of soft tissue with a fat rim, two lungs, a spine, and 3-6
    vessel-like tubes running through the lungs along z (about as dense as a nodule). ``positive`` adds
    one compact, spherical nodule (radius 3.5-5.5 voxels in-plane, 3-5 slices, 30-150 HU) inside a lung.
    Per-patient tissue, lung and noise levels vary more than the nodule changes any global statistic.

    With ``labels_out``, its ``"labels"`` entry receives the label map (0 elsewhere, 1 lung, 2 nodule: voxels
    at least half inside), computed from the same draws: the volume is the same with or without it.
    """
    nx, ny, nz = shape
    sx, sy, sz = spacing
    x, y, z = np.meshgrid(
        np.arange(nx, dtype=float), np.arange(ny, dtype=float), np.arange(nz, dtype=float), indexing="ij"
    )
    cx = nx / 2 + rng.uniform(-1.5, 1.5)
    cy = ny / 2 + rng.uniform(-1.5, 1.5)

    tissue = rng.uniform(25, 55)
    lung_hu = rng.uniform(-880, -740)
    noise = rng.uniform(10, 25)

    vol = np.full(shape, -1000.0)
    body_r = (nx * rng.uniform(0.43, 0.48), ny * rng.uniform(0.34, 0.40), 1e6)
    body = _soft_ellipse((x, y, z), (cx, cy, nz / 2), body_r)
    inner = _soft_ellipse((x, y, z), (cx, cy, nz / 2), (body_r[0] - 2.0, body_r[1] - 2.0, 1e6))
    vol += body * (-90.0 + 1000.0)  # fat rim
    vol += inner * (tissue + 90.0)

    # lungs shrink towards the first and last slices, like apices and bases
    lungs = np.zeros(shape)
    lung_centers = []
    for side in (-1, 1):
        lcx = cx + side * nx * rng.uniform(0.20, 0.24)
        lcy = cy - ny * rng.uniform(0.0, 0.04)
        lrx = nx * rng.uniform(0.14, 0.17)
        lry = ny * rng.uniform(0.22, 0.26)
        lrz = nz * rng.uniform(0.62, 0.75)
        lungs = np.maximum(lungs, _soft_ellipse((x, y, z), (lcx, lcy, nz / 2), (lrx, lry, lrz)))
        lung_centers.append((lcx, lcy, lrx, lry, lrz))
    vol += lungs * (lung_hu - tissue)

    # spine: a dense disc behind the mediastinum
    spine = _soft_ellipse((x, y, z), (cx, cy + ny * 0.27, nz / 2), (3.0, 3.0, 1e6))
    vol += spine * (rng.uniform(350, 650) - tissue)

    def lung_point(margin: float) -> tuple[float, float, float]:
        lcx, lcy, lrx, lry, lrz = lung_centers[int(rng.integers(2))]
        while True:
            u, v = rng.uniform(-1, 1, size=2)
            if u * u + v * v <= 1:
                break
        w = rng.uniform(-0.45, 0.45)
        return lcx + u * max(lrx - margin, 1.0), lcy + v * max(lry - margin, 1.0), nz / 2 + w * lrz

    # vessels: tubes along z that drift a little in-plane; present in both classes
    for _ in range(int(rng.integers(3, 7))):
        px, py, _pz = lung_point(2.0)
        dx, dy = rng.uniform(-0.15, 0.15, size=2)
        radius = rng.uniform(0.7, 1.3)
        hu = rng.uniform(-40, 60)
        d = np.sqrt((x - (px + dx * (z - nz / 2))) ** 2 + (y - (py + dy * (z - nz / 2))) ** 2)
        tube = np.clip(radius + 0.5 - d, 0.0, 1.0) * lungs
        vol += tube * (hu - vol)  # paint over, so crossing vessels do not add up

    if positive:
        # a sphere in mm (radius 3.5-5.5 voxels in-plane): it spans 3-5 slices, where vessels span them all
        radius = rng.uniform(3.5, 5.5)
        radii = (radius, radius * sx / sy, max(radius * sx / sz, 1.6))
        px, py, pz = lung_point(radius)
        pz = float(np.clip(pz, radii[2] + 1, nz - radii[2] - 2))
        nodule = _soft_ellipse((x, y, z), (px, py, pz), radii, edge=1.0) * lungs
        vol += nodule * (rng.uniform(30, 150) - vol)
    if labels_out is not None:
        labels = (lungs >= 0.5).astype(np.uint8)
        if positive:
            labels[nodule >= 0.5] = 2
        labels_out["labels"] = labels

    vol += rng.normal(0.0, noise, size=shape)
    return np.clip(np.rint(vol), -1024, 3071)


def _new_dataset(sop_class: str, sop_instance: str):
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _save(ds, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _fmt(value: float) -> str:
    """A DICOM decimal string that round-trips and fits 16 characters."""
    return f"{value:.6g}"


@dataclass(frozen=True)
class CTStudy:
    """One CT study to write: who, which label, and the volume's geometry."""

    patient: str
    study_index: int
    label: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _plan_ct(rng: np.random.Generator, prefix: str, n_patients: int, n_second: int) -> list[CTStudy]:
    labels = [CLASSES[i % 2] for i in range(n_patients)]
    rng.shuffle(labels)
    second = set(rng.choice(n_patients, size=n_second, replace=False).tolist())
    studies = []
    for p in range(n_patients):
        for s in range(2 if p in second else 1):
            n = int(rng.integers(20, 23)) * 2
            shape = (n, n, int(rng.integers(20, 23)))
            spacing = (float(rng.choice([0.7, 0.78, 0.8, 0.86])),) * 2 + (float(rng.choice([2.0, 2.5, 3.0])),)
            studies.append(CTStudy(f"{prefix}-{p + 1:03d}", s, labels[p], shape, spacing))
    return studies


def write_ct_dicom(out: Path, seed: int = SEED) -> list[dict[str, str]]:
    """Write the DICOM CT task into ``out`` (one folder per series) and its ``manifest.csv``."""
    rng = np.random.default_rng([seed, 1])
    rows = []
    for n, st in enumerate(_plan_ct(rng, "SYN-CT", n_patients=44, n_second=10)):
        hu = ct_phantom(rng, st.shape, st.spacing, st.label == "positive")
        folder = random_name(rng)
        signed = bool(rng.integers(2))
        extension = ".dcm" if rng.integers(2) else ""
        descending = bool(rng.integers(2))  # InstanceNumber 1 at the top (head) or at the bottom
        study_uid = make_uid("ct", st.patient, st.study_index, "study")
        series_uid = make_uid("ct", st.patient, st.study_index, "series")
        frame_uid = make_uid("ct", st.patient, st.study_index, "frame")
        # table position rounded to 0.1 mm, so the positions written as text step by exactly the spacing
        origin = (-st.shape[0] / 2 * st.spacing[0], -st.shape[1] / 2 * st.spacing[1], round(rng.uniform(-200, -100), 1))
        stored = (hu + 1024).astype(np.int16 if signed else np.uint16)
        nz = st.shape[2]
        for k in range(nz):
            sop_uid = make_uid("ct", st.patient, st.study_index, "slice", k)
            ds = _new_dataset(CT_IMAGE_STORAGE, sop_uid)
            ds.PatientName = f"Sample^{st.patient}"
            ds.PatientID = st.patient
            ds.PatientBirthDate = ""
            ds.PatientSex = "O"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.StudyDate = f"2024{st.study_index * 6 + 1:02d}{n % 27 + 1:02d}"
            ds.StudyTime = "120000"
            ds.StudyID = str(st.study_index + 1)
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.Modality = "CT"
            ds.Manufacturer = "medtl sample_data"
            ds.SeriesNumber = 2
            ds.SeriesDescription = f"CHEST {_fmt(st.spacing[2])}mm"
            ds.BodyPartExamined = "CHEST"
            ds.InstanceNumber = nz - k if descending else k + 1
            ds.ImagePositionPatient = [_fmt(origin[0]), _fmt(origin[1]), _fmt(origin[2] + k * st.spacing[2])]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SliceLocation = _fmt(origin[2] + k * st.spacing[2])
            ds.PixelSpacing = [_fmt(st.spacing[1]), _fmt(st.spacing[0])]  # row spacing (y), column spacing (x)
            ds.SliceThickness = _fmt(st.spacing[2])
            ds.KVP = "120"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = st.shape[1]
            ds.Columns = st.shape[0]
            ds.BitsAllocated = 16
            ds.BitsStored = 16 if signed else 12
            ds.HighBit = ds.BitsStored - 1
            ds.PixelRepresentation = 1 if signed else 0
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "-600"
            ds.WindowWidth = "1500"
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            _save(ds, out / folder / f"{random_name(rng)}{extension}")
        rows.append({"image": folder, "label": st.label})
    rows.sort(key=lambda r: r["image"])
    _write_csv(out / "manifest.csv", rows, ["image", "label"])
    return rows


def write_ct_nifti(out: Path, seed: int = SEED) -> list[dict[str, str]]:
    """Write the NIfTI CT task (int16 HU, RAS affine) into ``out`` and its ``manifest.csv``."""
    import nibabel as nib

    rng = np.random.default_rng([seed, 2])
    rows = []
    for st in _plan_ct(rng, "NII", n_patients=44, n_second=4):
        hu = ct_phantom(rng, st.shape, st.spacing, st.label == "positive").astype(np.int16)
        # voxel (i, j, k) lies at LPS (x0 + i*sx, y0 + j*sy, z0 + k*sz); RAS flips the first two axes
        lps_origin = np.array([-st.shape[0] / 2 * st.spacing[0], -st.shape[1] / 2 * st.spacing[1], -150.0])
        affine = np.diag([-st.spacing[0], -st.spacing[1], st.spacing[2], 1.0])
        affine[:3, 3] = lps_origin * np.array([-1.0, -1.0, 1.0])
        img = nib.Nifti1Image(hu, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        name = f"{random_name(rng)}.nii.gz"
        out.mkdir(parents=True, exist_ok=True)
        # gzip by hand with mtime 0: nibabel's writer stamps the current time, which breaks determinism
        (out / name).write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
        rows.append({"image": name, "label": st.label, "patient_id": st.patient})
    rows.sort(key=lambda r: r["image"])
    _write_csv(out / "manifest.csv", rows, ["image", "label", "patient_id"])
    return rows


def write_xray(out: Path, seed: int = SEED) -> list[dict[str, str]]:
    """Write the 2D radiograph task (CR/DX, some MONOCHROME1) into ``out`` and its ``manifest.csv``."""
    rng = np.random.default_rng([seed, 3])
    n_patients = 52
    labels = [CLASSES[i % 2] for i in range(n_patients)]
    rng.shuffle(labels)
    rows = []
    for p, label in enumerate(labels):
        patient = f"SYN-XR-{p + 1:03d}"
        shape = (int(rng.integers(48, 65)) * 2, int(rng.integers(48, 65)) * 2)
        att = xray_phantom(rng, shape, label == "positive")
        offset, gain = rng.uniform(150, 450), rng.uniform(1800, 2600)
        values = np.clip(np.rint(offset + gain * att), 0, 4095).astype(np.uint16)
        modality = "DX" if rng.integers(2) else "CR"
        monochrome1 = rng.uniform() < 0.35
        if monochrome1:  # stored inverted: air bright, bone dark; readers must invert it back
            values = (4095 - values).astype(np.uint16)
        ds = radiograph_dataset(
            values,
            patient=patient,
            uid_prefix="xr",
            study_date=f"2024{p % 12 + 1:02d}{p % 27 + 1:02d}",
            modality=modality,
            monochrome1=monochrome1,
            name_prefix="Sample",
            manufacturer="medtl sample_data",
            implementation_version=IMPLEMENTATION_VERSION,
        )
        name = f"{random_name(rng)}{'.dcm' if rng.integers(2) else ''}"
        _save(ds, out / name)
        rows.append({"image": name, "label": label})
    rows.sort(key=lambda r: r["image"])
    _write_csv(out / "manifest.csv", rows, ["image", "label"])
    write_xray_multilabel(out, seed)
    write_xray_regression(out, seed)
    return rows


def write_xray_multilabel(out: Path, seed: int = SEED) -> list[dict[str, str]]:
    """Write ``manifest_multilabel.csv`` beside the radiographs: three findings per image, CheXpert style.

    The draws of :func:`write_xray` are replayed (no image is written again) through a recorder that notes what
    ``xray_phantom`` drew: ``Nodule`` 1 when the image's opacity is round (the positive class), ``Scar`` 1 when it
    has one or more scar lines, ``Left`` 1 when the opacity lies in the lung field on the image's left (lower
    column indices). Uncertain (-1): ``Nodule`` when the opacity's radius is under 5.8 px (small: round or elongated
    is hard to call), ``Scar`` when the only scar line is under 15 px long. Blank (unknown): ``Left`` in 4 rows and
    ``Scar`` in 3, drawn by a generator of their own.
    """

    class Recorder:  # a Generator that notes every draw (method, arguments, result)
        def __init__(self, rng: np.random.Generator) -> None:
            self.rng, self.draws = rng, []

        def __getattr__(self, name: str):
            def draw(*args, **kwargs):
                value = getattr(self.rng, name)(*args, **kwargs)
                self.draws.append((name, args, value))
                return value

            return draw

    rng = np.random.default_rng([seed, 3])
    labels = [CLASSES[i % 2] for i in range(52)]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        shape = (int(rng.integers(48, 65)) * 2, int(rng.integers(48, 65)) * 2)
        rec = Recorder(rng)
        xray_phantom(rec, shape, label == "positive")  # type: ignore[arg-type]
        rng.uniform(150, 450), rng.uniform(1800, 2600), rng.integers(2), rng.uniform()  # grey levels, modality
        name = f"{random_name(rng)}{'.dcm' if rng.integers(2) else ''}"
        draws = [(m, a) for m, a, _ in rec.draws]
        values = [v for _, _, v in rec.draws]
        n_scars = int(values[draws.index(("integers", (0, 3)))])
        scar_lengths = [v for (m, a), v in zip(draws, values, strict=True) if (m, a) == ("uniform", (12, 20))]
        at = draws.index(("uniform", (5.5, 8.5)))  # the opacity's radius, then the lung field it is drawn in
        side = int(values[draws.index(("integers", (2,)), at)])
        nodule = "-1" if values[at] < 5.8 else str(int(label == "positive"))
        scar = "-1" if n_scars == 1 and scar_lengths[0] < 15 else str(int(n_scars > 0))
        rows.append({"image": name, "Nodule": nodule, "Scar": scar, "Left": str(int(side == 0))})
    blanks = np.random.default_rng([seed, 3, 1]).permutation(len(rows))
    for i in blanks[:4]:
        rows[i]["Left"] = ""
    for i in blanks[4:7]:
        rows[i]["Scar"] = ""
    rows.sort(key=lambda r: r["image"])
    _write_csv(out / "manifest_multilabel.csv", rows, ["image", "Nodule", "Scar", "Left"])
    return rows


def write_xray_regression(out: Path, seed: int = SEED) -> list[dict[str, str]]:
    """Write ``manifest_regression.csv`` beside the radiographs: each patient's body width in mm (``task: regression``).

    ``body_width_mm`` is the width of the body ellipse ``xray_phantom`` draws: twice its horizontal semi-axis (the
    image's columns times a draw of 0.42-0.47) times the column PixelSpacing of the written file (2.8 mm), so about
    230-330 mm. A measured size stands in for an age or a volume: a continuous quantity the network must read from
    the image. The draws of :func:`write_xray` are replayed (no image is written again), noting the semi-axis as
    ``xray_phantom`` draws it; the patient comes from the DICOM PatientID, as in manifest.csv.
    """
    import pydicom

    class WidthNote:  # the generator, noting xray_phantom's one draw between 0.42 and 0.47: the body's half-width
        def __init__(self, rng: np.random.Generator) -> None:
            self.rng, self.share = rng, np.nan

        def __getattr__(self, name: str):
            return getattr(self.rng, name)

        def uniform(self, low=0.0, high=1.0, size=None):
            value = self.rng.uniform(low, high, size)
            if (low, high) == (0.42, 0.47):
                self.share = float(value)
            return value

    rng = np.random.default_rng([seed, 3])
    labels = [CLASSES[i % 2] for i in range(52)]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        shape = (int(rng.integers(48, 65)) * 2, int(rng.integers(48, 65)) * 2)
        note = WidthNote(rng)
        xray_phantom(note, shape, label == "positive")  # type: ignore[arg-type]
        rng.uniform(150, 450), rng.uniform(1800, 2600), rng.integers(2), rng.uniform()  # grey levels, modality
        name = f"{random_name(rng)}{'.dcm' if rng.integers(2) else ''}"
        column_mm = float(pydicom.dcmread(out / name, stop_before_pixels=True).PixelSpacing[1])
        rows.append({"image": name, "body_width_mm": f"{2 * shape[1] * note.share * column_mm:.1f}"})
    rows.sort(key=lambda r: r["image"])
    _write_csv(out / "manifest_regression.csv", rows, ["image", "body_width_mm"])
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


WRITERS = {"ct": write_ct_dicom, "ct_nifti": write_ct_nifti, "xray": write_xray}


def generate(out: str | Path = HERE, tasks: Sequence[str] = TASKS, seed: int = SEED) -> dict[str, Path]:
    """Write the sample tasks under ``out``, replacing any earlier copy of those task folders.

    Returns:
        The folder written for each task.
    """
    out = Path(out)
    written = {}
    for task in tasks:
        if task not in WRITERS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        folder = out / task
        if folder.exists():
            shutil.rmtree(folder)
        WRITERS[task](folder, seed)
        written[task] = folder
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the task folders into")
    parser.add_argument("--task", action="append", choices=TASKS, help="write only this task (repeatable)")
    args = parser.parse_args(argv)
    for task, folder in generate(args.out, args.task or TASKS).items():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{task}: {folder} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
