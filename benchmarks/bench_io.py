"""Read a generated 512x512x300 CT series (and the same volume as NIfTI) with medtl, SimpleITK and MONAI; index a
generated tree of thousands of DICOM files with medtl, SimpleITK's series discovery and a plain pydicom loop.

Usage: ``python benchmarks/bench_io.py [--slices 300] [--size 512] [--repeats 2]`` (reading) and
``python benchmarks/bench_io.py --tree [--files 3000,10000] [--pairs 7]`` (indexing).

Reading prints one table: seconds (best of ``--repeats``), slices per second, and the largest difference from the
known truth in HU after bringing each result to (x, y, z) order. A second table shows a folder holding
two series: medtl reads the one asked for, MONAI's PydicomReader stacks both into one volume.

Indexing generates a tree per size (50 files per series) and prints files/s of SimpleITK's series discovery
(``GetGDCMSeriesIDs`` + ``GetGDCMSeriesFileNames`` over every series folder, and ``GetGDCMSeriesIDs`` alone), a
naive pydicom ``dcmread(stop_before_pixels=True)`` loop and medtl (``index_tree`` and the ``medtl index`` command,
first with an empty header cache and again with the cache filled); then the time ratio of a first medtl index to
SimpleITK as the median of back-to-back pairs, whole processes (the command against SimpleITK run as a script) and
in process; and the peak memory of ``medtl index`` at a third and at all of the files.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_volume(size: int, slices: int) -> np.ndarray:
    """A CT-like phantom in stored values (int16, intercept -1024): body ellipse, bones, noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    c = size / 2
    body = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.32 * size)) ** 2 < 1
    vol = np.empty((slices, size, size), dtype=np.int16)
    for k in range(slices):
        s = np.where(body, 1064, 24).astype(np.int16)  # soft tissue ~ 40 HU, air ~ -1000 HU
        r = 0.05 * size * (1 + 0.3 * np.sin(k / 20))
        bone = (x - c - 0.2 * size) ** 2 + (y - c) ** 2 < r**2
        s[bone] = 2024
        s += rng.integers(-20, 20, size=(size, size), dtype=np.int16)
        vol[k] = s
    return vol


def write_series(
    folder: Path,
    raw: np.ndarray,
    *,
    series_uid: str,
    description: str,
    spacing: float = 1.0,
    seed: int = 0,
    instance_by_position: bool = True,
) -> None:
    """One file per slice, random names. InstanceNumber follows position unless ``instance_by_position=False``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study = "1.2.826.0.1.3680043.8.498.77"
    order = list(range(raw.shape[0]))
    rng.shuffle(order)
    for n, k in enumerate(order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = "BENCH"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.InstanceNumber = (k if instance_by_position else n) + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-250.0, -250.0, -150.0 + k * spacing]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = raw.shape[1], raw.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = raw[k].tobytes()
        ds.save_as(folder / f"{rng.getrandbits(40):010x}", enforce_file_format=True)


def write_tree(root: Path, patients: int, series: int, files: int, size: int = 64) -> int:
    """``root/PATIENT/SERIES/IMxxxx``: ``series`` CT series spread over ``patients`` patients, ``files`` files in
    all. Headers carry what scanners write beyond geometry (dates, names, a referenced-image sequence, a private
    block), so header reads are not flattered. Returns the number of files written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    per_series = max(1, files // series)
    pixels = (np.arange(size * size, dtype=np.int16).reshape(size, size) % 2000).tobytes()
    written = 0
    for s in range(series):
        patient = f"PAT{s % patients:03d}"
        folder = root / patient / f"S{s:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
        for k in range(per_series):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240102"
            ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101010.000"
            ds.AccessionNumber = f"ACC{s:05d}"
            ds.Modality = "CT"
            ds.Manufacturer = "Bench"
            ds.InstitutionName = "Bench Hospital"
            ds.ReferringPhysicianName = "Doe^Jane"
            ds.StudyDescription = "CT chest"
            ds.SeriesDescription = f"axial {s}"
            ds.ManufacturerModelName = "Model 1"
            ds.ReferencedImageSequence = Sequence([Dataset(), Dataset()])
            for item in ds.ReferencedImageSequence:
                item.ReferencedSOPClassUID = CTImageStorage
                item.ReferencedSOPInstanceUID = generate_uid()
            ds.PatientName = f"Bench^{patient}"
            ds.PatientID = patient
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.SliceThickness = 1.25
            ds.KVP = 120
            ds.DataCollectionDiameter = 500
            ds.ReconstructionDiameter = 350
            ds.GantryDetectorTilt = 0
            ds.ConvolutionKernel = "STANDARD"
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = s + 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [-175.0, -175.0, -100.0 + 1.25 * k]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = -100.0 + 1.25 * k
            ds.add_new(0x00291010, "LO", "private block")
            ds.add_new(0x00291011, "OB", bytes(512))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = size, size
            ds.PixelSpacing = [0.68, 0.68]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
            ds.PixelData = pixels
            ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
            written += 1
    return written


def _peak_rss_of_index(root: Path, home: Path) -> tuple[float, float]:
    """Peak resident memory (MiB) of a fresh process that runs ``index_tree(root)`` with an empty cache, and the
    largest peak among the helper processes it started (0 when it read every header itself)."""
    import subprocess
    import sys

    code = (
        "import resource, sys; from medtl.data.index import index_tree; index_tree(sys.argv[1]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = dict(os.environ, MEDTL_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code, str(root)], env=env, capture_output=True, text=True, check=True)
    own, helpers = out.stdout.strip().splitlines()[-1].split()
    return int(own) / 1024, int(helpers) / 1024


# SimpleITK's series discovery as a user writes it: the series of each folder, then each series' files.
_SITK_DISCOVERY = """
import sys, SimpleITK as sitk
reader, n = sitk.ImageSeriesReader(), 0
for folder in sys.argv[1:]:
    for uid in reader.GetGDCMSeriesIDs(folder):
        n += len(reader.GetGDCMSeriesFileNames(folder, uid))
print(n)
"""
_SITK_IDS = """
import sys, SimpleITK as sitk
reader = sitk.ImageSeriesReader()
print(sum(len(reader.GetGDCMSeriesIDs(folder)) for folder in sys.argv[1:]))
"""


def _command_env(tmp: Path) -> dict[str, str]:
    """The environment of the timed commands: Python's bytecode cache on, in a folder of the benchmark's own.

    An installed medtl runs from compiled ``.pyc`` files; a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as on
    the project's machines) would compile every medtl module at each start and time the compiler instead.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def _median_range(values: list[float]) -> str:
    return f"{np.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def bench_tree(sizes: list[int], pairs: int) -> None:
    """Index generated trees with medtl, SimpleITK and pydicom; print files/s and the time ratio to SimpleITK."""
    print(f"cores: {os.cpu_count()}, load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    for n_files in sizes:
        series = max(1, n_files // 50)
        bench_tree_once(min(50, max(1, series // 3)), series, n_files, pairs)
    print(f"\nload average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")


def bench_tree_once(patients: int, series: int, files: int, pairs: int) -> None:
    """One tree of ``files`` files: best times, then ``pairs`` back-to-back pairs in process and as commands."""
    import shutil
    import subprocess
    import sys

    import pydicom
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="medtl-bench-tree-") as tmp:
        root = Path(tmp) / "tree"
        t = time.perf_counter()
        n = write_tree(root, patients, series, files)
        folders = sorted({p.parent for p in root.rglob("IM*")})
        took = time.perf_counter() - t
        print(f"\n## {n:,} files ({len(folders)} series of {patients} patients), written in {took:.1f} s")
        env = _command_env(Path(tmp))

        def drop_cache(home: Path) -> None:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            (home / "id-secret").write_text("bench-secret-0123456789abcdef\n")
            (home / "id-secret").chmod(0o600)

        home = Path(tmp) / "home"
        os.environ["MEDTL_HOME"] = str(home)
        from medtl.data.index import index_tree

        def sitk_discovery() -> int:
            reader = sitk.ImageSeriesReader()
            return sum(
                len(reader.GetGDCMSeriesFileNames(str(f), uid))
                for f in folders
                for uid in reader.GetGDCMSeriesIDs(str(f))
            )

        def sitk_ids() -> int:
            reader = sitk.ImageSeriesReader()
            return sum(len(reader.GetGDCMSeriesIDs(str(f))) for f in folders)

        def pydicom_loop() -> int:
            count = 0
            for f in folders:
                for p in sorted(f.iterdir()):
                    pydicom.dcmread(p, stop_before_pixels=True)
                    count += 1
            return count

        def medtl_first() -> int:
            drop_cache(home)
            return len(index_tree(root).rows)

        def medtl_cached() -> int:
            return len(index_tree(root).rows)

        def run(cmd: list[str], **extra: str) -> float:
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=dict(env, **extra))
            return time.perf_counter() - t

        medtl_cmd = [
            str(Path(sys.executable).with_name("medtl")),
            "index",
            str(root),
            "--out",
            str(Path(tmp) / "m.csv"),
        ]

        def cli(first: bool) -> float:
            if first:
                drop_cache(home)
            return run(medtl_cmd, MEDTL_HOME=str(home))

        def sitk_script(code: str = _SITK_DISCOVERY) -> float:
            return run([sys.executable, "-c", code, *map(str, folders)])

        def startup() -> float:
            return run([str(Path(sys.executable).with_name("medtl")), "index", "--help"])

        cli(True)  # compiles medtl's modules into the benchmark's bytecode cache, as an installation has them
        sitk_s, _, found = best_time(sitk_discovery, 5)
        cases = [
            ("SimpleITK GetGDCMSeriesIDs + GetGDCMSeriesFileNames (every series folder)", sitk_s, found),
            ("SimpleITK GetGDCMSeriesIDs alone", *best_time(sitk_ids, 5)[::2]),
            ("pydicom dcmread(stop_before_pixels) loop", *best_time(pydicom_loop, 2)[::2]),
            ("medtl index_tree, empty cache", *best_time(medtl_first, 5)[::2]),
        ]
        medtl_cached()
        cases.append(("medtl index_tree, cache filled", *best_time(medtl_cached, 3)[::2]))
        cli_first = min(cli(True) for _ in range(3))
        cli_cached = min(cli(False) for _ in range(3))
        start = min(startup() for _ in range(3))
        sitk_cmd = min(sitk_script() for _ in range(3))
        cases.append(("`medtl index` command, empty cache (with start-up)", cli_first, "-"))
        cases.append(("`medtl index` command, cache filled (with start-up)", cli_cached, "-"))
        cases.append(("`medtl index --help` (start-up alone)", start, "no files"))
        cases.append(("SimpleITK discovery as a script (`python -c`, with start-up)", sitk_cmd, "-"))
        print("\n| indexer | seconds (best) | files/s | time vs SimpleITK in process |")
        print("|---|---:|---:|---:|")
        for name, seconds, _out in cases:
            rate = "-" if _out == "no files" else f"{n / seconds:,.0f}"
            print(f"| {name} | {seconds:.2f} | {rate} | {seconds / sitk_s:.2f}x |")

        def timed(fn: Callable[[], Any]) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        # The machine's speed drifts (and on a shared machine, other work comes and goes): each ratio is taken from
        # two runs made back to back, alternating which of the two goes first; the median of the pairs is reported.
        def pair(a: Callable[[], float], b: Callable[[], float], a_first: bool) -> float:
            if a_first:
                ta = a()
                return ta / b()
            tb = b()
            return a() / tb

        inproc, inproc_ids, command, command_ids = [], [], [], []
        for k in range(pairs):
            inproc.append(pair(lambda: timed(medtl_first), lambda: timed(sitk_discovery), k % 2 == 0))
            inproc_ids.append(pair(lambda: timed(medtl_first), lambda: timed(sitk_ids), k % 2 == 1))
            command.append(pair(lambda: cli(True), sitk_script, k % 2 == 0))
            command_ids.append(pair(lambda: cli(True), lambda: sitk_script(_SITK_IDS), k % 2 == 1))
        print(
            f"\nfirst index (empty header cache) / SimpleITK, median (range) of {pairs} back-to-back pairs:\n"
            f"- whole processes, `medtl index` / SimpleITK discovery script: **{_median_range(command)}**; "
            f"/ GetGDCMSeriesIDs-only script: {_median_range(command_ids)}\n"
            f"- in process, `index_tree` / SimpleITK discovery: **{_median_range(inproc)}**; "
            f"/ GetGDCMSeriesIDs alone: {_median_range(inproc_ids)}"
        )
        third = Path(tmp) / "third"
        third.mkdir()
        for f in folders[: max(1, len(folders) // 3)]:
            dest = third / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
        small = sum(1 for _ in third.rglob("IM*"))
        rss_small, helper_small = _peak_rss_of_index(third, Path(tmp) / "home-rss1")
        for f in sorted({p.parent for p in third.rglob("IM*")}):
            dest = root / f.relative_to(third)
            f.rename(dest)
        rss_all, helper_all = _peak_rss_of_index(root, Path(tmp) / "home-rss2")
        print(
            f"\npeak memory of `index_tree` (fresh process, empty cache): {rss_small:.0f} MiB for {small} files, "
            f"{rss_all:.0f} MiB for {n} files (largest helper process: {helper_small:.0f} and {helper_all:.0f} MiB)"
        )


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best wall-clock seconds, the CPU seconds (all threads of this process) of that run, and the result."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        out = None
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, cpu = wall, used
    return best, cpu, out


def error_vs_truth(arr: np.ndarray, truth_xyz: np.ndarray) -> str:
    if arr.shape != truth_xyz.shape:
        return f"WRONG shape {arr.shape}"
    err = float(np.max(np.abs(arr.astype(np.float32) - truth_xyz)))
    return f"max |err| {err:.3g} HU" + ("" if err < 1e-3 else "  WRONG")


def spacing_of(img: Any) -> float:
    """z spacing of a MetaTensor from its affine."""
    return float(np.linalg.norm(np.asarray(img.affine, dtype=np.float64)[:3, 2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tree", action="store_true", help="benchmark indexing a generated tree instead")
    parser.add_argument("--files", default="3000,10000", help="tree sizes, comma-separated (50 files per series)")
    parser.add_argument("--pairs", type=int, default=7, help="back-to-back pairs per ratio")
    args = parser.parse_args()
    if args.tree:
        warnings.simplefilter("ignore")
        bench_tree([int(v) for v in args.files.split(",")], args.pairs)
        return
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("medtl.io").setLevel(logging.WARNING)
    import nibabel as nib
    import SimpleITK as sitk
    import torch
    from monai.transforms import LoadImage

    from medtl.io import read_scan

    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = os.environ.get("MEDTL_IO_WORKERS", "auto")
    print(f"cores: {os.cpu_count()}, load average {load:.1f}, medtl io threads: {threads}")
    with tempfile.TemporaryDirectory(prefix="medtl-bench-") as tmp:
        root = Path(tmp)
        raw = make_volume(args.size, args.slices)
        truth = raw.transpose(2, 1, 0).astype(np.float32) - 1024  # (x, y, z) in HU
        t = time.perf_counter()
        write_series(root / "ct", raw, series_uid="1.2.826.0.1.3680043.8.498.1", description="bench")
        affine = np.diag([-0.9765625, -0.9765625, 1.0, 1.0])
        affine[:3, 3] = [250.0, 250.0, -150.0]
        nib.save(nib.Nifti1Image((raw.transpose(2, 1, 0).astype(np.int16) - 1024), affine), root / "ct.nii.gz")
        print(
            f"wrote {args.slices} slices of {args.size}x{args.size} and the NIfTI in {time.perf_counter() - t:.1f} s\n"
        )

        def sitk_series() -> np.ndarray:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(root / "ct")))
            return sitk.GetArrayFromImage(reader.Execute()).transpose(2, 1, 0)

        def monai_series() -> np.ndarray:
            img = LoadImage(reader="PydicomReader", image_only=True)(str(root / "ct"))
            return np.asarray(img)

        def sitk_nifti() -> np.ndarray:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(root / "ct.nii.gz"))).transpose(2, 1, 0)

        def monai_nifti() -> np.ndarray:
            return np.asarray(LoadImage(reader="NibabelReader", image_only=True)(str(root / "ct.nii.gz")))

        cases = [
            ("DICOM series", "medtl read_scan", lambda: read_scan(root / "ct")[0].numpy()),
            ("DICOM series", "SimpleITK ImageSeriesReader", sitk_series),
            ("DICOM series", "MONAI LoadImage(PydicomReader)", monai_series),
            ("NIfTI .nii.gz", "medtl read_scan", lambda: read_scan(root / "ct.nii.gz")[0].numpy()),
            ("NIfTI .nii.gz", "SimpleITK ReadImage", sitk_nifti),
            ("NIfTI .nii.gz", "MONAI LoadImage(NibabelReader)", monai_nifti),
        ]
        rows = []
        for fmt, name, fn in cases:
            seconds, cpu, arr = best_time(fn, args.repeats)
            rows.append((fmt, name, seconds, cpu, args.slices / seconds, error_vs_truth(arr, truth)))
            del arr
        print("| input | reader | seconds | CPU seconds | slices/s | correctness vs truth |")
        print("|---|---|---:|---:|---:|---|")
        for fmt, name, s, cpu, rate, ok in rows:
            print(f"| {fmt} | {name} | {s:.2f} | {cpu:.2f} | {rate:.0f} | {ok} |")

        # A folder with two series of the same patient: medtl reads one; MONAI stacks both.
        two = root / "two"
        small = make_volume(64, 40)
        write_series(two, small[:30], series_uid="1.2.826.0.1.3680043.8.498.2", description="thin 1mm")
        write_series(two, small[:10], series_uid="1.2.826.0.1.3680043.8.498.3", description="thick 3mm", spacing=3.0)
        m = read_scan(two)
        m_thick = read_scan(two, "thick 3mm")
        mon = LoadImage(reader="PydicomReader", image_only=True)(str(two))
        print("\nCorrectness cases (64x64 slices):\n")
        print("| case | reader | shape | z spacing | result |\n|---|---|---|---:|---|")
        case = "two series (30 + 10 slices) in one folder"
        print(
            f"| {case} | medtl read_scan(folder) | {tuple(m.shape[1:])} | {m.meta['spacing'][2]:g} | "
            f"{m.meta['series_description']!r}, the largest (choice logged) |"
        )
        print(
            f"| {case} | medtl read_scan(folder, 'thick 3mm') | {tuple(m_thick.shape[1:])} | "
            f"{m_thick.meta['spacing'][2]:g} | {m_thick.meta['series_description']!r} |"
        )
        print(
            f"| {case} | MONAI LoadImage(PydicomReader) | {tuple(mon.shape)} | {spacing_of(mon):.3g} | "
            "both series stacked into one volume |"
        )
        # InstanceNumber is not required to follow position (here it follows the order files were written)
        scr = root / "scrambled"
        write_series(scr, small, series_uid="1.2.826.0.1.3680043.8.498.4", description="x", instance_by_position=False)
        small_truth = small.transpose(2, 1, 0).astype(np.float32) - 1024
        m = read_scan(scr)
        mon = LoadImage(reader="PydicomReader", image_only=True)(str(scr))
        case = "InstanceNumber not in position order (40 slices)"
        print(
            f"| {case} | medtl read_scan | {tuple(m.shape[1:])} | {m.meta['spacing'][2]:g} | "
            f"{error_vs_truth(m[0].numpy(), small_truth)} |"
        )
        print(
            f"| {case} | MONAI LoadImage(PydicomReader) | {tuple(mon.shape)} | {spacing_of(mon):.3g} | "
            f"{error_vs_truth(np.asarray(mon), small_truth)} |"
        )


if __name__ == "__main__":
    main()
