"""One scan in two manifest rows, disguised: a symlinked folder, a hard link, a copy, under another patient.

Split by patient, such a scan lands in train and test at once (a probe found 16 of 29 test images also in train).
Every disguise must be an error naming both rows (and both patients, pseudonymised, when they differ).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.dicom import write_image
from pydicom.uid import generate_uid

from medtl.data import Manifest
from medtl.errors import ManifestError
from medtl.utils import hash_patient_id


def _nifti(path: Path, seed: int, shape: tuple[int, ...] = (6, 6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(-1000, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """scans/ct0..ct3.nii.gz (different contents) and alias/ -> scans/ (a symlinked folder)."""
    for i in range(4):
        _nifti(tmp_path / "scans" / f"ct{i}.nii.gz", seed=i)
    (tmp_path / "alias").symlink_to(tmp_path / "scans", target_is_directory=True)
    return tmp_path


def _load(path: Path, text: str) -> Manifest:
    path.write_text(text.lstrip("\n"))
    return Manifest.from_csv(path)


def _problems(path: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        _load(path, text)
    assert "\n" not in str(caught.value)
    return caught.value.problems  # type: ignore[attr-defined]


def test_the_same_file_through_a_symlinked_folder_under_another_patient(scans: Path) -> None:
    problems = _problems(
        scans / "m.csv",
        """
image,label,patient_id,split
scans/ct0.nii.gz,a,PATIENT-ONE,train
scans/ct1.nii.gz,b,PATIENT-TWO,train
scans/ct2.nii.gz,a,PATIENT-THREE,test
alias/ct0.nii.gz,a,PATIENT-NINE,test
""",
    )
    assert len(problems) == 1
    (text,) = problems
    assert text.startswith("row 5: image 'alias/ct0.nii.gz' is the scan of row 2 (the same path through a symlink)")
    assert f"row 2 gives patient {hash_patient_id('PATIENT-ONE')}" in text
    assert f"this row patient {hash_patient_id('PATIENT-NINE')}" in text
    assert "PATIENT" not in text  # pseudonyms only, as everywhere else


def test_a_hard_link_and_a_copy_are_the_same_scan(scans: Path) -> None:
    os.link(scans / "scans" / "ct1.nii.gz", scans / "linked.nii.gz")
    shutil.copyfile(scans / "scans" / "ct2.nii.gz", scans / "copied.nii.gz")
    problems = _problems(
        scans / "m.csv",
        """
image,label,patient_id
scans/ct1.nii.gz,a,P1
scans/ct2.nii.gz,b,P2
linked.nii.gz,a,P3
copied.nii.gz,b,P4
scans/ct3.nii.gz,b,P5
""",
    )
    assert [p.split(",")[0] for p in problems] == [
        "row 4: image 'linked.nii.gz' is the scan of row 2 (the same file: a hard link)",
        "row 5: image 'copied.nii.gz' is the scan of row 3 (a copy: the same bytes)",
    ]
    assert all("(pseudonyms)" in p for p in problems)


def test_the_same_scan_twice_under_one_patient_is_the_existing_duplicate_error(scans: Path) -> None:
    problems = _problems(
        scans / "m.csv",
        "image,label,patient_id\nscans/ct0.nii.gz,a,P1\nscans/ct3.nii.gz,b,P2\nalias/ct0.nii.gz,a,P1\n",
    )
    assert problems == ["row 4: image 'alias/ct0.nii.gz' is the scan of row 2 (the same path through a symlink)"]


def test_a_dicom_folder_through_a_symlink_with_the_same_series(tmp_path: Path) -> None:
    axial, scout = generate_uid(), generate_uid()
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4)
    for k in range(2):
        write_image(tmp_path / "study" / f"ax{k}.dcm", pixels + k, patient_id="PA", series_uid=axial)
    write_image(tmp_path / "study" / "scout.dcm", pixels, patient_id="PA", series_uid=scout)
    (tmp_path / "link").symlink_to(tmp_path / "study", target_is_directory=True)
    csv = tmp_path / "m.csv"
    # the other series of the same folder, through the link, is another scan
    manifest = _load(csv, f"image,label,series\nstudy,a,{axial}\nlink,b,{scout}\n")
    assert len(manifest) == 2
    problems = _problems(csv, f"image,label,series\nstudy,a,{axial}\nlink,b,{scout}\nlink,a,{axial}\n")
    assert problems == ["row 4: image 'link' is the scan of row 2 (the same path through a symlink)"]


def test_files_that_only_share_a_size_or_their_edges_are_different_scans(tmp_path: Path) -> None:
    # uncompressed, 256 KiB of voxels: equal size, equal first and last 64 KiB, one voxel apart in the middle
    shape = (64, 64, 32)
    data = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
    other = data.copy()
    other[32, 32, 16] += 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(other, np.eye(4)), tmp_path / "b.nii")
    a, b = (tmp_path / "a.nii").read_bytes(), (tmp_path / "b.nii").read_bytes()
    assert len(a) == len(b) and a[: 64 * 1024] == b[: 64 * 1024] and a[-64 * 1024 :] == b[-64 * 1024 :] and a != b
    manifest = _load(tmp_path / "m.csv", "image,label,patient_id\na.nii,x,P1\nb.nii,y,P2\n")
    assert len(manifest) == 2
