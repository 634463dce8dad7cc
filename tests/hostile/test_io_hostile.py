"""Hostile inputs to the reading side, through the real ``medtl`` command: each bad input is built on the fly.

Every case checks what a user sees: the exit code, one line on stderr naming the path, no traceback, nothing
half-written, and a time bound where the input used to hang the reader.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.cli import assert_one_line_error, medtl, no_leftovers
from helpers.dicom import random_raw, write_ct_stack, write_image, write_series


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "medtl-home"
    return dict(os.environ, MEDTL_HOME=str(home), HF_HUB_OFFLINE="1", MEDTL_DEBUG="0")


# --------------------------------------------------------------------------------------------- hangs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_link_in_a_scan_folder_do_not_hang_inspect_or_index(tmp_path: Path, env) -> None:
    root = tmp_path / "scans"
    write_ct_stack(root / "p1", "P1", 3)
    os.mkfifo(root / "p1" / "pipe")
    os.symlink("/dev/zero", root / "p1" / "zero-device")
    proc = medtl(env, "inspect", root, "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "pipe" in proc.stdout and "zero-device" in proc.stdout and "not a regular file" in proc.stdout
    assert '"n_slices": 3' in proc.stdout
    out = tmp_path / "m.csv"
    proc = medtl(env, "index", root, "--out", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "pipe: not a regular file" in proc.stderr and "zero-device: not a regular file" in proc.stderr
    with open(out, newline="") as fh:
        assert [r["image"] for r in csv.DictReader(fh)] == ["scans/p1"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_given_directly_is_refused(tmp_path: Path, env) -> None:
    os.mkfifo(tmp_path / "pipe.dcm")
    line = assert_one_line_error(medtl(env, "inspect", tmp_path / "pipe.dcm"), "pipe.dcm")
    assert "not a regular file" in line
    out = tmp_path / "x.nii.gz"
    assert_one_line_error(medtl(env, "convert", tmp_path / "pipe.dcm", out), "pipe.dcm")
    assert not out.exists()


# --------------------------------------------------------------------------------------------- sizes


def _claims_huge(path: Path, rows: int = 60000, cols: int = 60000) -> None:
    """Patch a 4 x 4 DICOM file so that its header claims rows x cols 16-bit pixels."""
    data = bytearray(path.read_bytes())
    # Rows (0028,0010) and Columns (0028,0011), explicit VR 'US', length 2: patch their values in place
    for tag, value in (((0x0028, 0x0010), rows), ((0x0028, 0x0011), cols)):
        marker = tag[0].to_bytes(2, "little") + tag[1].to_bytes(2, "little") + b"US" + (2).to_bytes(2, "little")
        at = data.index(marker) + len(marker)
        data[at : at + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_a_header_claiming_more_pixels_than_the_file_holds_is_refused_before_allocating(tmp_path: Path, env) -> None:
    _claims_huge(write_image(tmp_path / "one" / "huge.dcm", np.zeros((4, 4), np.int16)))
    out = tmp_path / "out.nii.gz"
    line = assert_one_line_error(medtl(env, "convert", tmp_path / "one" / "huge.dcm", out), "huge.dcm")
    assert "60000" in line and "bytes" in line
    assert not out.exists() and no_leftovers(tmp_path) == []


def test_a_series_claiming_tens_of_gigabytes_is_refused_before_allocating(tmp_path: Path, env) -> None:
    folder = tmp_path / "series"
    paths = write_series(folder, random_raw((3, 4, 4)))
    for p in paths:  # 3 x 60000 x 60000 float32 would be 43 GB
        _claims_huge(p)
    out = tmp_path / "out.nii.gz"
    proc = medtl(env, "convert", folder, out)
    line = assert_one_line_error(proc, str(folder.name))
    assert "60000" in line
    assert not out.exists()


def test_a_nifti_header_claiming_more_voxels_than_the_file_holds(tmp_path: Path, env) -> None:
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    nib.save(img, tmp_path / "ok.nii")
    data = bytearray((tmp_path / "ok.nii").read_bytes())
    dims = np.frombuffer(bytes(data[40:56]), "<i2").copy()
    dims[1:4] = 30000  # 30000^3 float32 voxels = 108 TB
    data[40:56] = dims.tobytes()
    (tmp_path / "big.nii").write_bytes(bytes(data))
    out = tmp_path / "out.nii.gz"
    line = assert_one_line_error(medtl(env, "convert", tmp_path / "big.nii", out), "big.nii")
    assert "30000" in line or "bytes" in line
    assert not out.exists()


# --------------------------------------------------------------------------------------------- geometry, types


def test_nan_affine_and_zero_orientation_are_one_line_errors(tmp_path: Path, env) -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.eye(4), code=1)
    nib.save(img, tmp_path / "nan.nii")
    data = bytearray((tmp_path / "nan.nii").read_bytes())
    data[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]: nibabel would refuse to write it
    (tmp_path / "nan.nii").write_bytes(bytes(data))
    out = tmp_path / "out.nii.gz"
    line = assert_one_line_error(medtl(env, "convert", tmp_path / "nan.nii", out), "nan.nii")
    assert "affine" in line
    assert not out.exists()

    folder = tmp_path / "zero-iop"
    write_series(folder, random_raw((3, 4, 4)), iop=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    line = assert_one_line_error(medtl(env, "convert", folder, out), "zero-iop")
    assert "orientation" in line.lower()
    assert not out.exists()
    # inside a tree, the same series' files are listed as problems and the rest is indexed
    write_ct_stack(tmp_path / "tree" / "good", "P1", 3)
    write_series(tmp_path / "tree" / "bad", random_raw((3, 4, 4)), iop=(0.0,) * 6)
    proc = medtl(env, "index", tmp_path / "tree", "--out", tmp_path / "m.csv")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    with open(tmp_path / "m.csv", newline="") as fh:
        assert [r["image"] for r in csv.DictReader(fh)] == ["tree/good"]
    assert "3 file(s) could not be read" in proc.stderr
    assert proc.stderr.count("the orientation is degenerate") == 3


def test_rgb_nifti_is_a_one_line_error(tmp_path: Path, env) -> None:
    rgb = np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    out = tmp_path / "out.nii.gz"
    line = assert_one_line_error(medtl(env, "convert", tmp_path / "rgb.nii.gz", out), "rgb.nii.gz")
    assert "RGB" in line or "structured" in line
    assert not out.exists()


def test_empty_files_are_problems_in_a_tree_and_errors_alone(tmp_path: Path, env) -> None:
    root = tmp_path / "scans"
    write_ct_stack(root / "p1", "P1", 3)
    (root / "p1" / "empty.dcm").write_bytes(b"")
    (root / "empty.nii.gz").write_bytes(b"")
    proc = medtl(env, "inspect", root)
    assert proc.returncode == 0 and "empty file (0 bytes)" in proc.stdout
    assert_one_line_error(medtl(env, "inspect", root / "p1" / "empty.dcm"), "empty.dcm")
    assert_one_line_error(medtl(env, "inspect", root / "empty.nii.gz"), "empty.nii.gz")


def test_non_utf8_file_names(tmp_path: Path, env) -> None:
    root = tmp_path / "scans"
    write_ct_stack(root / "p1", "P1", 3)
    bad_name = os.fsencode(root / "p2") + b"/caf\xe9"  # latin-1 bytes, not UTF-8
    os.makedirs(os.fsencode(root / "p2"))
    write_ct_stack(Path(os.fsdecode(bad_name)), "P2", 2)
    proc = medtl(env, "inspect", root)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "2 series" in proc.stdout
    out = tmp_path / "m.csv"
    proc = medtl(env, "index", root, "--out", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "not valid UTF-8" in proc.stderr
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert [r["image"] for r in rows] == ["scans/p1"]


# --------------------------------------------------------------------------------------------- outputs


def test_an_output_path_that_is_a_folder(tmp_path: Path, env) -> None:
    write_ct_stack(tmp_path / "scans" / "p1", "P1", 3)
    taken = tmp_path / "out.nii.gz"
    taken.mkdir()
    line = assert_one_line_error(medtl(env, "convert", tmp_path / "scans" / "p1", taken), "out.nii.gz")
    assert "folder" in line
    assert list(taken.iterdir()) == [] and no_leftovers(tmp_path) == []
    folder = tmp_path / "lists"
    folder.mkdir()
    line = assert_one_line_error(medtl(env, "index", tmp_path / "scans", "--out", folder), "lists")
    assert "folder" in line
    assert list(folder.iterdir()) == [] and no_leftovers(tmp_path) == []


def test_inspect_exits_non_zero_when_nothing_could_be_read(tmp_path: Path, env) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"not a scan at all" * 20)
    (tmp_path / "junk" / "b.dcm").write_bytes(b"")
    proc = medtl(env, "inspect", tmp_path / "junk")
    line = assert_one_line_error(proc, "junk")
    assert "2 file(s)" in line
    assert_one_line_error(medtl(env, "inspect", tmp_path / "junk" / "a.dcm"), "a.dcm")


# --------------------------------------------------------------------------------------------- leaks


def test_a_folder_of_two_patients_is_an_error_naming_the_series(tmp_path: Path, env) -> None:
    folder = tmp_path / "mixed"
    uid_a = write_ct_stack(folder, "PA", 4, description="axial")
    uid_b = write_ct_stack(folder, "PB", 3, description="coronal")
    out = tmp_path / "out.nii.gz"
    line = assert_one_line_error(medtl(env, "convert", folder, out), "mixed")
    assert uid_a in line and uid_b in line and "'axial'" in line and "'coronal'" in line
    assert "2 different patients" in line
    assert not out.exists()
    proc = medtl(env, "convert", folder, out, "--series", "coronal")
    assert proc.returncode == 0 and out.is_file()
    assert nib.load(out).shape[2] == 3


def test_unwritable_outputs_and_medtl_home_are_one_line_errors(tmp_path: Path, env) -> None:
    write_ct_stack(tmp_path / "scans" / "p1", "P1", 3)
    # /proc accepts no new files, even from root: stands in for a read-only or full disk
    line = assert_one_line_error(medtl(env, "index", tmp_path / "scans", "--out", "/proc/medtl-x/m.csv"), "/proc")
    assert "cannot write" in line
    ro_home = {k: v for k, v in env.items() if k != "MEDTL_ID_SECRET"} | {"MEDTL_HOME": "/proc/medtl-home"}
    line = assert_one_line_error(medtl(ro_home, "inspect", tmp_path / "scans"), "/proc/medtl-home")
    assert "MEDTL_ID_SECRET" in line
    # with the secret given by the site, an unwritable MEDTL_HOME only costs the header cache
    given = dict(ro_home, MEDTL_ID_SECRET="site-secret-0123456789abcdef")
    proc = medtl(given, "inspect", tmp_path / "scans")
    assert proc.returncode == 0 and "1 series" in proc.stdout and proc.stderr == ""
