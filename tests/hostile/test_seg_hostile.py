"""Hostile inputs to segmentation, through the ``medtl`` command: masks, DICOM SEG, manifests, configs, predict.

Every bad input is built here (nibabel, pydicom, highdicom into ``tmp_path``). Each case checks what a user sees:
exit != 0, one line on stderr naming the file or value and the fix, no traceback, no output half-written; and
for each kind of input a good twin that works, so that a refusal cannot pass for a check.

One tiny 3D run (1 epoch, 32^3 patches, resnet10_3d, classes background/ball/core) serves the module; its
commands run in this process (``medtl.cli.main``), one case runs the installed command in a new process.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from helpers.cli import assert_one_line_error, medtl, no_leftovers
from helpers.dicom import highdicom_seg, write_radiograph, write_series
from helpers.seg_tasks import make_disc_task, make_sphere_task, seg_config

from medtl.cli import main
from medtl.train import fine_tune
from medtl.transforms.record import InputRecord

CLASSES = ["background", "ball", "core"]
AFFINE = np.diag([1.0, 1.0, 2.5, 1.0])  # the sphere task's grid
SLOW_START = 120.0  # a new process imports torch and Lightning


class _Proc:
    """What a user sees of ``medtl ARGS`` run in this process."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run_medtl(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``medtl ARGS`` in this process (MEDTL_HOME stays the session's: the run's pseudonyms must match)."""
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    monkeypatch.delenv("MEDTL_RUN_DIR", raising=False)

    def run(*args: str | Path) -> _Proc:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return _Proc(code, captured.out, captured.err)

    return run


def _config(manifest: Path, out: Path, name: str, **segmentation) -> dict:
    return seg_config(
        manifest,
        out,
        data={"mode": "3d"},
        preprocess={"size": None, "ct_window": [-1000, 400]},
        model={"arch": "resnet10_3d"},
        segmentation={
            "classes": CLASSES,
            "patch_size": [32, 32, 32],
            "samples_per_scan": 1,
            "decoder_channels": [8, 8, 8, 8, 8],
            **segmentation,
        },
        splits={"val_fraction": 0.34, "test_fraction": 0.0},
        train={"epochs": 1, "batch_size": 2, "threads": 1},
        output={"name": name},
    )


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the run folder, the task folder): 6 CT-like volumes 24 x 20 x 12 with a ball, no label column."""
    task = tmp_path_factory.mktemp("balls")
    manifest = make_sphere_task(task, n_patients=6)
    out = tmp_path_factory.mktemp("runs")
    fine_tune(_config(manifest, out, "seg"), quiet=True)
    return out / "seg", task


def _ball(task: Path, i: int = 0) -> np.ndarray:
    return np.asarray(nib.load(str(task / f"ball_{i:03d}.nii.gz")).dataobj)


def _new_scan(task: Path, folder: Path, i: int = 0) -> Path:
    """A copy of the task's scan ``i`` outside the run's manifest: a scan the run has not seen."""
    copy = folder / f"new_{i:03d}.nii.gz"
    copy.write_bytes((task / f"vol_{i:03d}.nii.gz").read_bytes())
    return copy


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _manifest(path: Path, rows: Sequence[Sequence[object]], header: str = "image,mask,patient_id") -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows([[str(c) for c in r] for r in rows])
    return path


# ------------------------------------------------------------------------------------------ NIfTI masks


def _bad_masks(task: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (mask path, words the one line must hold)."""
    ball = _ball(task)
    value = ball.copy()
    value[0, 0, 0] = 3
    moved = AFFINE.copy()
    moved[0, 3] = 5.0
    picture = ball.astype(np.uint8) * 255
    half = ball.astype(np.float32) * 0.5
    nan = ball.astype(np.float32)
    nan[0, 0, 0] = np.nan
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "a_folder").mkdir()
    return {
        "value_outside_classes": (_nifti(folder / "v3.nii.gz", value), ("label value(s) 3", "0..2")),
        "a_0_255_picture": (_nifti(folder / "white.nii.gz", picture), ("label value(s) 255", "not 255")),
        "other_grid": (_nifti(folder / "grid.nii.gz", ball[:, :, :10]), ("differ in grid", "(24, 20, 10)")),
        "other_affine": (_nifti(folder / "moved.nii.gz", ball, moved), ("differ in geometry", "5 mm")),
        "four_d": (_nifti(folder / "m4.nii.gz", np.stack([ball, ball], -1)), ("holds 2 volumes", "3D label map")),
        "float_half": (_nifti(folder / "half.nii.gz", half), ("label value(s) 0.5",)),
        "nan": (_nifti(folder / "nan.nii.gz", nan), ("non-finite",)),
        "empty_file": (folder / "empty.nii.gz", ("empty (0 bytes)",)),
        "a_folder": (folder / "a_folder", ("is a folder", "DICOM SEG")),
    }


BAD_MASKS = [
    "value_outside_classes",
    "a_0_255_picture",
    "other_grid",
    "other_affine",
    "four_d",
    "float_half",
    "nan",
    "empty_file",
    "a_folder",
]


@pytest.mark.parametrize("case", BAD_MASKS)
def test_a_bad_mask_is_one_line_naming_it_and_nothing_is_written(seg_run, tmp_path: Path, run_medtl, case) -> None:
    run, task = seg_run
    mask, words = _bad_masks(task, tmp_path)[case]
    image = _new_scan(task, tmp_path)
    scores = tmp_path / "scores.csv"
    proc = run_medtl("evaluate", run, _manifest(tmp_path / "m.csv", [[image, mask, "NEW1"]]), "--out", scores)
    line = assert_one_line_error(proc, mask.name, *words)
    assert "row 2" in line  # the manifest row to fix
    if case in ("value_outside_classes", "other_grid", "other_affine", "float_half"):
        assert "new_000.nii.gz" in line  # both files named
    assert not scores.exists() and no_leftovers(tmp_path) == []


def test_a_good_mask_of_a_new_patient_is_scored(seg_run, tmp_path: Path, run_medtl) -> None:
    """The twin of the cases above: the same voxels with their own mask, integer or float 0/1 alike (the second
    file holds the first's voxels under another header description: a byte copy under another patient would be a
    duplicate scan, which manifests refuse)."""
    run, task = seg_run
    image = _new_scan(task, tmp_path)
    as_float = _nifti(tmp_path / "f.nii.gz", _ball(task).astype(np.float32))
    copy = tmp_path / "copy.nii.gz"
    twin = nib.load(str(image))
    twin.header["descrip"] = b"the same voxels, another file"
    nib.save(nib.Nifti1Image(np.asarray(twin.dataobj), twin.affine, twin.header), str(copy))
    assert copy.read_bytes() != image.read_bytes()
    scores = tmp_path / "scores.csv"
    manifest = _manifest(tmp_path / "m.csv", [[image, task / "ball_000.nii.gz", "NEW1"], [copy, as_float, "NEW2"]])
    proc = run_medtl("evaluate", run, manifest, "--out", scores)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(scores)))
    assert len(rows) == 2 and rows[0]["dice_ball"] == rows[1]["dice_ball"]  # same mask, same score
    assert (tmp_path / "scores_patients.csv").is_file()


def test_a_bad_mask_in_training_stops_the_run_with_one_line(seg_run, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    value = _ball(task, 3)
    value[1, 1, 1] = 7
    bad = _nifti(tmp_path / "seven.nii.gz", value)
    rows = [[task / f"vol_{i:03d}.nii.gz", bad if i == 3 else task / f"ball_{i:03d}.nii.gz", f"B{i}"] for i in range(6)]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(_manifest(tmp_path / "m.csv", rows), tmp_path / "runs", "bad")))
    line = assert_one_line_error(run_medtl("train", cfg), "seven.nii.gz", "label value(s) 7")
    assert "row 5" in line
    assert not (tmp_path / "runs" / "bad" / "best.ckpt").exists() and no_leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ manifests


def test_mask_cells_missing_empty_or_without_a_column(seg_run, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    image, other, third = (_new_scan(task, tmp_path, i) for i in range(3))
    ok = task / "ball_000.nii.gz"
    m = _manifest(tmp_path / "missing.csv", [[image, tmp_path / "nope.nii.gz", "N1"]])
    line = assert_one_line_error(run_medtl("evaluate", run, m), "missing.csv", "nope.nii.gz", "does not exist")
    assert "row 2" in line
    m = _manifest(tmp_path / "holes.csv", [[image, ok, "N1"], [other, "", "N2"], [third, " ", "N3"]])
    line = assert_one_line_error(run_medtl("evaluate", run, m), "holes.csv", "row 3: empty 'mask'", "row 4")
    assert "row 2" not in line
    m = _manifest(tmp_path / "nocol.csv", [[image, "ball", "N1"]], header="image,label,patient_id")
    assert_one_line_error(run_medtl("evaluate", run, m), "nocol.csv", "no 'mask' column")


def test_a_label_free_manifest_still_needs_labels_for_classification(seg_run, tmp_path: Path, run_medtl) -> None:
    _, task = seg_run
    cfg = _config(task / "manifest.csv", tmp_path / "runs", "cls")
    del cfg["segmentation"]
    path = tmp_path / "cls.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert_one_line_error(run_medtl("train", path), "manifest.csv", "missing column 'label'")


# ------------------------------------------------------------------------------------------ DICOM SEG


def _dicom_series(folder: Path, patient: str) -> list[pydicom.Dataset]:
    """An axial CT series of 10 slices of 20 x 24 pixels (1 mm, 2.5 mm apart) with a bright box; its datasets in
    slice order, with the patient and study attributes highdicom copies."""
    raw = np.full((10, 20, 24), 1024 - 600, np.int16)
    raw[3:7, 6:14, 8:16] = 1024 + 100
    write_series(folder, raw, pixel_spacing=(1.0, 1.0), slice_spacing=2.5, patient_id=patient, origin=(0, 0, 0))
    datasets = [pydicom.dcmread(f) for f in folder.iterdir()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    for ds in datasets:
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"):
            setattr(ds, keyword, getattr(ds, keyword, ""))
        for keyword in ("AccessionNumber", "ReferringPhysicianName"):
            setattr(ds, keyword, getattr(ds, keyword, ""))
    return datasets


def _seg(path: Path, datasets: list[pydicom.Dataset], names: Sequence[str], pixels: np.ndarray) -> Path:
    pytest.importorskip("highdicom")
    highdicom_seg(datasets, pixels, names).save_as(path)
    return path


@pytest.fixture
def dicom_pair(tmp_path: Path) -> tuple[Path, list[pydicom.Dataset], Path, list[pydicom.Dataset]]:
    a, b = tmp_path / "seriesA", tmp_path / "seriesB"
    return a, _dicom_series(a, "DS-A"), b, _dicom_series(b, "DS-B")


def _box() -> np.ndarray:
    px = np.zeros((10, 20, 24), np.uint8)
    px[3:7, 6:14, 8:16] = 1
    return px


def test_a_seg_of_its_own_series_is_scored(seg_run, dicom_pair, tmp_path: Path, run_medtl) -> None:
    run, _ = seg_run
    a, datasets, _, _ = dicom_pair
    seg = _seg(tmp_path / "ok.dcm", datasets, ["Ball"], _box())  # SegmentLabel case ignored
    proc = run_medtl("evaluate", run, _manifest(tmp_path / "m.csv", [[a, seg, "DS-A"]]), "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"n": 1' in proc.stdout


def test_bad_dicom_seg_masks_are_one_line_errors(seg_run, dicom_pair, tmp_path: Path, run_medtl) -> None:
    run, _ = seg_run
    a, datasets_a, b, datasets_b = dicom_pair

    def evaluate(mask: Path) -> str:
        proc = run_medtl("evaluate", run, _manifest(tmp_path / "m.csv", [[a, mask, "DS-A"]]))
        return assert_one_line_error(proc, mask.name)

    line = evaluate(_seg(tmp_path / "other.dcm", datasets_b, ["ball"], _box()))
    assert "segments series" in line and "seriesA" in line
    both = np.stack([_box(), _box()], -1)
    both[..., :2, 1] = 0  # the core: part of the ball's voxels
    line = evaluate(_seg(tmp_path / "overlap.dcm", datasets_a, ["ball", "core"], both))
    assert "segments 1 'ball' and 2 'core' overlap" in line
    line = evaluate(_seg(tmp_path / "unknown.dcm", datasets_a, ["tumour"], _box()))
    assert "'tumour' match none of segmentation.classes" in line and "background" in line
    # a DICOM image (not a SEG) in the mask column: named as what it is, not as a wrong-shaped image
    ct_file = next(a.iterdir())
    line = evaluate(ct_file)
    assert "CT image" in line and "not a DICOM Segmentation" in line
    line = evaluate(b)  # a whole DICOM folder
    assert "is a folder" in line
    # a SEG cut short: its header reads, its frames do not
    whole = _seg(tmp_path / "whole.dcm", datasets_a, ["ball"], _box()).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[: len(whole) - 400])
    line = evaluate(tmp_path / "cut.dcm")
    assert "cannot read the frames of DICOM SEG" in line and "export the SEG again" in line


# ------------------------------------------------------------------------------------------ predict


def test_predict_on_a_segmentation_run_writes_masks_and_refuses_bad_outputs(
    seg_run, tmp_path: Path, run_medtl, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, task = seg_run
    image = task / "vol_000.nii.gz"
    # no --out: the folder masks/ in the working directory, as --help says
    monkeypatch.chdir(tmp_path)
    proc = run_medtl("predict", run, image)
    assert proc.returncode == 0, proc.stderr
    mask = nib.load(str(tmp_path / "masks" / "vol_000_mask.nii.gz"))
    assert mask.shape == (24, 20, 12) and np.abs(mask.affine - AFFINE).max() < 1e-3
    # an output that cannot be a folder of masks: refused before any scan is segmented
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    line = assert_one_line_error(run_medtl("predict", run, image, "--out", a_file), "a_file")
    assert "is a file" in line and "--out" in line
    line = assert_one_line_error(run_medtl("predict", run, image, "--out", a_file / "masks"), "a_file")
    assert "not a folder" in line
    assert a_file.read_text() == "x" and no_leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_into_a_read_only_folder(seg_run, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = assert_one_line_error(run_medtl("predict", run, task / "vol_000.nii.gz", "--out", folder / "m"), "ro")
        assert "not writable" in line and list(folder.iterdir()) == []
    finally:
        folder.chmod(stat.S_IRWXU)


def test_predict_does_not_write_masks_into_an_input_series_folder(seg_run, dicom_pair, run_medtl) -> None:
    run, _ = seg_run
    a, *_ = dicom_pair
    files = sorted(p.name for p in a.iterdir())
    for out in (a, a / "masks"):
        line = assert_one_line_error(run_medtl("predict", run, a, "--out", out), "seriesA")
        assert "inside the input scan folder" in line
    assert sorted(p.name for p in a.iterdir()) == files


def test_dicom_seg_output_needs_a_dicom_input(seg_run, dicom_pair, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    out = tmp_path / "masks"
    line = assert_one_line_error(
        run_medtl("predict", run, task / "vol_000.nii.gz", "--out", out, "--dicom-seg"), "vol_000.nii.gz"
    )
    assert "--dicom-seg needs DICOM inputs" in line and not out.exists()
    # the twin: a DICOM series gets its SEG, which reads back onto the series' grid
    a, *_ = dicom_pair
    proc = run_medtl("predict", run, a, "--out", out, "--dicom-seg")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["seriesA_mask.nii.gz", "seriesA_seg.dcm"]
    assert pydicom.dcmread(out / "seriesA_seg.dcm").Modality == "SEG"


def test_a_3d_run_refuses_a_2d_image(seg_run, tmp_path: Path, run_medtl) -> None:
    run, _ = seg_run
    out = tmp_path / "masks"
    # a one-slice NIfTI (how 2D images are stored as NIfTI) used to be padded into a 32^3 window: exit 0, a mask
    flat = _nifti(tmp_path / "flat.nii.gz", np.zeros((32, 32, 1), np.float32))
    line = assert_one_line_error(run_medtl("predict", run, flat, "--out", out), "flat.nii.gz")
    assert "single slice" in line and "2D run" in line
    xray = tmp_path / "xray.dcm"
    write_radiograph(xray, np.zeros((40, 48), np.uint16), "XR-1")
    line = assert_one_line_error(run_medtl("predict", run, xray, "--out", out), "xray.dcm")
    assert "takes 3D input" in line
    assert not out.exists()


@pytest.mark.slow  # a second (2D) run: about 5 s alone, more on a loaded machine
def test_a_2d_run_refuses_a_volume(seg_run, tmp_path: Path, run_medtl) -> None:
    _, task = seg_run
    (tmp_path / "discs").mkdir()
    manifest = make_disc_task(tmp_path / "discs", n_patients=6)
    cfg = seg_config(
        manifest,
        tmp_path / "runs",
        segmentation={"decoder_channels": [8, 8, 8, 8, 8]},
        splits={"val_fraction": 0.34, "test_fraction": 0.0},
        train={"epochs": 1, "batch_size": 2, "threads": 1},
        output={"name": "flat"},
    )
    fine_tune(cfg, quiet=True)
    out = tmp_path / "masks"
    line = assert_one_line_error(
        run_medtl("predict", tmp_path / "runs" / "flat", task / "vol_000.nii.gz", "--out", out), "vol_000.nii.gz"
    )
    assert "takes 2D input" in line and not out.exists()
    proc = run_medtl("predict", tmp_path / "runs" / "flat", tmp_path / "discs" / "img_000.nii.gz", "--out", out)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------ evaluate


def test_evaluate_refuses_a_folder_as_out_before_scoring(seg_run, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    m = _manifest(tmp_path / "m.csv", [[_new_scan(task, tmp_path), task / "ball_000.nii.gz", "N1"]])
    (tmp_path / "scores").mkdir()
    line = assert_one_line_error(run_medtl("evaluate", run, m, "--out", tmp_path / "scores"), "scores")
    assert "is a folder" in line and list((tmp_path / "scores").iterdir()) == []


def test_evaluate_refuses_to_overwrite_its_manifest(seg_run, tmp_path: Path, run_medtl) -> None:
    run, task = seg_run
    m = _manifest(tmp_path / "m.csv", [[_new_scan(task, tmp_path), task / "ball_000.nii.gz", "N1"]])
    before = m.read_bytes()
    line = assert_one_line_error(run_medtl("evaluate", run, m, "--out", m), "m.csv")
    assert "would overwrite it" in line and m.read_bytes() == before
    # nor with the per-patient file written next to --out
    patients_of = tmp_path / "x.csv"
    _manifest(tmp_path / "x_patients.csv", [[_new_scan(task, tmp_path, 1), task / "ball_001.nii.gz", "N2"]])
    line = assert_one_line_error(
        run_medtl("evaluate", run, tmp_path / "x_patients.csv", "--out", patients_of), "x_patients.csv"
    )
    assert "would overwrite it" in line and not patients_of.exists()


def test_evaluate_knows_the_runs_own_scans_without_a_patient_id(seg_run, tmp_path: Path, run_medtl) -> None:
    """Without patient_id a NIfTI file's name stands in for its patient: the run's own scans used to pass for new
    patients (exit 0, inflated metrics). They are told by their paths in the run's manifest."""
    run, task = seg_run
    m = _manifest(tmp_path / "m.csv", [[task / "vol_000.nii.gz", task / "ball_000.nii.gz"]], header="image,mask")
    with pytest.warns(UserWarning, match="no patient_id"):
        line = assert_one_line_error(run_medtl("evaluate", run, m), "m.csv", "row(s) of patients the run")
    assert "--allow-seen" in line and "rows 2" in line
    # a copy of the file elsewhere is another scan as far as paths go: scored as new
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes((task / "vol_000.nii.gz").read_bytes())
    m = _manifest(tmp_path / "n.csv", [[copy, task / "ball_000.nii.gz"]], header="image,mask")
    with pytest.warns(UserWarning, match="no patient_id"):
        proc = run_medtl("evaluate", run, m)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # a new process costs the imports; the same error is checked in-process by default
def test_evaluate_in_a_new_process_says_one_line(seg_run, tmp_path: Path) -> None:
    """The installed command, as a user starts it: a 4D mask."""
    run, task = seg_run
    mask = _nifti(tmp_path / "m4.nii.gz", np.stack([_ball(task)] * 3, -1))
    m = _manifest(tmp_path / "m.csv", [[_new_scan(task, tmp_path), mask, "N1"]])
    env = dict(os.environ, MEDTL_DEBUG="0")
    assert_one_line_error(medtl(env, "evaluate", run, m, limit=SLOW_START), "m4.nii.gz", "holds 3 volumes")


# ------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    ("classes", "words"),
    [
        (["background", "ball", "ball"], ("segmentation.classes", "list each class once")),
        (["background"], ("segmentation.classes", "at least one other class")),
        (["background", "Ball", "ball"], ("'Ball' and 'ball'", "list each class once")),
    ],
)
def test_classes_with_duplicates_or_only_background(seg_run, tmp_path: Path, run_medtl, classes, words) -> None:
    _, task = seg_run
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(task / "manifest.csv", tmp_path / "runs", "c", classes=classes)))
    assert_one_line_error(run_medtl("train", path), *words)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_patch_size_of_the_wrong_length(seg_run, tmp_path: Path, run_medtl) -> None:
    _, task = seg_run
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(task / "manifest.csv", tmp_path / "runs", "p", patch_size=[32, 32])))
    assert_one_line_error(run_medtl("train", path), "segmentation.patch_size [32, 32]", "needs 3")


def test_patch_size_not_a_multiple_of_the_encoder_reduction(seg_run, tmp_path: Path, run_medtl) -> None:
    _, task = seg_run
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(task / "manifest.csv", tmp_path / "runs", "p", patch_size=[24, 24, 24])))
    assert_one_line_error(run_medtl("train", path), "patch_size", "32")


def test_a_patch_larger_than_the_volume_pads_it_with_background(seg_run) -> None:
    """Documented: whole volumes are padded to at least one patch; the mask's padding is background."""
    from medtl.config import load_config
    from medtl.transforms.segmentation import build_segmentation_pipeline
    from medtl.weights.sources import Normalization

    _, task = seg_run
    cfg = load_config(_config(task / "manifest.csv", task / "unused", "x", patch_size=[64, 64, 64]))
    pipe = build_segmentation_pipeline(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    image, mask = task / "vol_000.nii.gz", task / "ball_000.nii.gz"
    d = pipe.pre({"image": str(image), "mask": str(mask), "_path": str(image), "_mask_path": str(mask)})
    assert tuple(d["image"].shape) == (1, 64, 64, 64) and tuple(d["mask"].shape) == (1, 64, 64, 64)
    assert int(d["mask"].sum()) == int(_ball(task).sum())  # every ball voxel kept, none added


def test_an_overlay_folder_that_cannot_be_made_is_one_error_naming_it(tmp_path: Path) -> None:
    """A file where a run's overlays/ should go (or a full disk) ends the run with medtl's one line, not OSError."""
    from medtl.errors import MedtlError
    from medtl.train.overlay import write_overlays

    blocker = tmp_path / "run"
    blocker.write_text("x")
    with pytest.raises(MedtlError, match=r"cannot create the overlay folder .*run/overlays") as err:
        write_overlays(blocker / "overlays", lambda x: x, [], [], CLASSES)
    assert "\n" not in str(err.value)
