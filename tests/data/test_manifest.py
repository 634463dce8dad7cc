"""Manifest CSVs: validation of every row, patient IDs from CSV / DICOM / NIfTI names, subsets."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.dicom import NEW, write_image
from pydicom.uid import generate_uid

from medtl.data import Manifest, Record
from medtl.data.manifest import UNLABELLED
from medtl.errors import ManifestError
from medtl.utils import hash_patient_id


def write_dicom(path: Path, patient_id: str | None, *, series_uid: str | None = None, description: str = "") -> Path:
    """A small, valid CT slice with the given PatientID (None: no PatientID element) and no StudyInstanceUID."""
    return write_image(
        path,
        np.zeros((4, 4), np.uint16),
        patient_id=patient_id,
        study_uid=None,
        series_uid=series_uid or NEW,
        description=description,
    )


def write_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), path)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """scans/a (DICOM folder of patient PA, two files), scans/b.dcm (patient PB), scans/c.nii.gz."""
    write_dicom(tmp_path / "scans" / "a" / "IM1", "PA")
    write_dicom(tmp_path / "scans" / "a" / "IM2", "PA")
    write_dicom(tmp_path / "scans" / "b.dcm", "PB")
    write_nifti(tmp_path / "scans" / "c.nii.gz")
    return tmp_path


def test_loads_rows_with_hashed_patients_and_absolute_images(tree: Path) -> None:
    csv = write_csv(
        tree / "manifest.csv",
        """
image,label,patient_id,split,site
scans/a,positive,P-001,train,north
scans/b.dcm,negative,P-002,val,south
scans/c.nii.gz,positive,P-001,test,north
""",
    )
    m = Manifest.from_csv(csv)
    assert len(m) == 3
    assert m.classes == ["negative", "positive"]
    assert m.labels == [1, 0, 1]
    assert m.patients == [hash_patient_id("P-001"), hash_patient_id("P-002"), hash_patient_id("P-001")]
    assert "P-001" not in str(m.to_dicts())
    assert m.path == csv.resolve() and m.root == tree.resolve()
    d = m.to_dicts()[1]
    assert d["image"] == str((tree / "scans" / "b.dcm").resolve())
    assert (d["label"], d["label_name"], d["split"], d["series"], d["row"]) == (0, "negative", "val", None, 3)
    assert d["site"] == "south"  # extra columns are kept
    assert isinstance(m[0], Record) and m[0].extra == {"site": "north"}


def test_patient_id_comes_from_dicom_headers_when_the_column_is_absent(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label\nscans/a,x\nscans/b.dcm,y\n")
    m = Manifest.from_csv(csv)
    assert m.patients == [hash_patient_id("PA"), hash_patient_id("PB")]


def test_empty_patient_cell_falls_back_to_dicom(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label,patient_id\nscans/a,x,\nscans/b.dcm,y,Q\n")
    assert Manifest.from_csv(csv).patients == [hash_patient_id("PA"), hash_patient_id("Q")]


def test_patient_id_of_the_requested_series_in_a_shared_folder(tmp_path: Path) -> None:
    uid = generate_uid()
    write_dicom(tmp_path / "mixed" / "0001", "OTHER", description="scout")
    write_dicom(tmp_path / "mixed" / "0002", "WANTED", series_uid=uid, description="axial")
    csv = write_csv(tmp_path / "m.csv", f"image,label,series\nmixed,x,{uid}\nmixed,y,axial\n")
    m = Manifest.from_csv(csv)
    assert m.patients == [hash_patient_id("WANTED"), hash_patient_id("WANTED")]
    assert [r.series for r in m] == [uid, "axial"]
    # without a series, the folder's two patients cannot be told apart: an error naming the series to choose
    write_csv(csv, f"image,label,series\nmixed,x,{uid}\nmixed,z,\n")
    with pytest.raises(ManifestError) as err:
        Manifest.from_csv(csv)
    text = str(err.value)
    assert "row 3:" in text and "row 2:" not in text and "2 different patients" in text
    assert "'scout'" in text and "'axial'" in text and uid in text and "series column" in text


def test_nifti_without_patient_column_uses_the_file_stem_and_warns(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label\nscans/c.nii.gz,x\nscans/b.dcm,y\n")
    with pytest.warns(UserWarning, match=r"no patient_id for 1 NIfTI row\(s\) \(rows 2\)"):
        m = Manifest.from_csv(csv)
    assert m.patients == [hash_patient_id("c"), hash_patient_id("PB")]


def test_no_warning_when_nifti_rows_have_patients(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label,patient_id\nscans/c.nii.gz,x,P1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Manifest.from_csv(csv)


def test_all_problems_are_reported_at_once_with_row_numbers(tree: Path) -> None:
    csv = write_csv(
        tree / "m.csv",
        """
image,label,split
scans/a,positive,train
scans/missing.dcm,negative,
scans/b.dcm,,val
scans/c.nii.gz,postive,test
,negative,
scans/a,negative,validation
""",
    )
    with pytest.raises(ManifestError) as info:
        Manifest.from_csv(csv, classes=["negative", "positive"])
    problems = info.value.problems
    text = str(info.value)
    assert "6 problem(s)" in text and str(csv.resolve()) in text
    assert problems == [
        f"row 3: image 'scans/missing.dcm' not found (looked for {(tree / 'scans' / 'missing.dcm').resolve()})",
        "row 4: empty 'label'",
        "row 5: unknown label 'postive' (did you mean 'positive'?); allowed: negative, positive",
        "row 6: empty 'image'",
        "row 7: image 'scans/a' is also in row 2",
        "row 7: split 'validation' is not one of train, val, test (did you mean 'val'?)",
    ]


def test_unknown_labels_are_only_checked_when_classes_are_given(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label\nscans/a,zebra\nscans/b.dcm,apple\n")
    assert Manifest.from_csv(csv).classes == ["apple", "zebra"]
    with pytest.raises(ManifestError, match=r"row 2: unknown label 'zebra'.*row 3: unknown label 'apple'"):
        Manifest.from_csv(csv, classes=["cat", "dog"])


def test_given_classes_set_the_label_order(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label\nscans/a,b\nscans/b.dcm,a\n")
    m = Manifest.from_csv(csv, classes=["b", "a"])
    assert m.classes == ["b", "a"] and m.labels == [0, 1]


def test_missing_columns(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "path,Labels\nscans/a,x\n")
    with pytest.raises(
        ManifestError, match=r"missing column 'image'; missing column 'label' \(did you mean 'Labels'\?\)"
    ):
        Manifest.from_csv(csv)


def test_known_columns_match_case_insensitively_and_label_column_is_configurable(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "Image,diagnosis,Patient_ID\nscans/a,sick,p\n")
    m = Manifest.from_csv(csv, label_column="diagnosis")
    assert m[0].label_name == "sick" and m[0].patient_id == hash_patient_id("p")


def test_empty_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is empty"):
        Manifest.from_csv(write_csv(tmp_path / "empty.csv", ""))
    with pytest.raises(ManifestError, match="has a header but no rows"):
        Manifest.from_csv(write_csv(tmp_path / "header.csv", "image,label\n\n"))
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest.from_csv(tmp_path / "nope.csv")


def test_dicom_without_patient_id_is_a_problem(tmp_path: Path) -> None:
    write_dicom(tmp_path / "anon.dcm", None)
    csv = write_csv(tmp_path / "m.csv", "image,label\nanon.dcm,x\n")
    with pytest.raises(ManifestError, match=r"row 2: no patient ID: the patient_id column is absent"):
        Manifest.from_csv(csv)


def test_check_files_false_skips_existence_checks(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "m.csv", "image,label,patient_id\nnot/there.dcm,x,P\n")
    m = Manifest.from_csv(csv, check_files=False)
    assert m[0].image == (tmp_path / "not" / "there.dcm").resolve()
    with pytest.raises(ManifestError, match="not found"):
        Manifest.from_csv(csv)


def test_bom_and_absolute_paths(tree: Path) -> None:
    absolute = (tree / "scans" / "b.dcm").resolve()
    csv = tree / "m.csv"
    csv.write_bytes(f"\ufeffimage,label\n{absolute},x\n".encode())
    assert Manifest.from_csv(csv)[0].image == absolute


def test_subset_and_filter(tree: Path) -> None:
    csv = write_csv(
        tree / "m.csv",
        "image,label,patient_id,split\nscans/a,pos,P1,train\nscans/b.dcm,neg,P2,val\nscans/c.nii.gz,pos,P3,train\n",
    )
    m = Manifest.from_csv(csv)
    assert [r.row for r in m.subset([2, 0])] == [4, 2]
    assert m.subset([1]).classes == m.classes
    assert [r.row for r in m.filter(split="train")] == [2, 4]
    assert [r.row for r in m.filter(labels=["neg"])] == [3]
    assert [r.row for r in m.filter(patients=[hash_patient_id("P3")])] == [4]
    assert [r.row for r in m.filter(lambda r: r.label_name == "pos", split=["train", "val"])] == [2, 4]
    with pytest.raises(ManifestError, match="unknown split"):
        m.filter(split="training")
    moved = m.with_splits({hash_patient_id("P1"): "test"})
    assert moved.splits == ["test", "val", "train"]


def test_labels_differing_only_by_case_or_spacing_are_an_error_naming_the_rows(tree: Path) -> None:
    csv = write_csv(
        tree / "m.csv",
        "image,label,patient_id\nscans/a,Positive,P1\nscans/b.dcm,positive,P2\nscans/c.nii.gz,no  finding,P3\n"
        "scans/a/IM1,no finding,P4\n",
    )
    with pytest.raises(ManifestError) as err:
        Manifest.from_csv(csv)
    text = str(err.value)
    assert "labels 'Positive' (rows 2) and 'positive' (rows 3) differ only by case or spacing" in text
    assert "'no  finding' (rows 4) and 'no finding' (rows 5)" in text
    assert "2 problem(s)" in text


@pytest.mark.parametrize("marker", ["nan", "NaN", "NA", "N/A", "null", "<NA>"])
def test_missing_value_markers_as_labels_are_an_error(tree: Path, marker: str) -> None:
    csv = write_csv(tree / "m.csv", f"image,label,patient_id\nscans/a,yes,P1\nscans/b.dcm,{marker},P2\n")
    with pytest.raises(ManifestError, match=rf"rows 3: the label is a missing-value marker \('{marker}'\)"):
        Manifest.from_csv(csv)
    # a class list that names it makes it a class
    m = Manifest.from_csv(csv, classes=["yes", marker])
    assert m.labels == [0, 1]


def test_empty_labels_are_an_error(tree: Path) -> None:
    csv = write_csv(tree / "m.csv", "image,label,patient_id\nscans/a,yes,P1\nscans/b.dcm, ,P2\n")
    with pytest.raises(ManifestError, match="row 3: empty 'label'"):
        Manifest.from_csv(csv)


# ------------------------------------------------------------------ manifests without labels (segmentation)


def test_without_labels_required_a_manifest_without_a_label_column_has_one_unlabelled_class(tree: Path) -> None:
    text = "image,mask,patient_id\nscans/a,ma.nii.gz,P1\nscans/b.dcm,mb.nii.gz,P2\nscans/c.nii.gz,mc,P1\n"
    csv = write_csv(tree / "seg.csv", text)
    m = Manifest.from_csv(csv, labels_required=False)
    assert not m.labelled and m.classes == [UNLABELLED] and m.labels == [0, 0, 0]
    assert [r.label_name for r in m] == [UNLABELLED] * 3
    assert m.patients == [hash_patient_id("P1"), hash_patient_id("P2"), hash_patient_id("P1")]
    assert [r.extra["mask"] for r in m] == ["ma.nii.gz", "mb.nii.gz", "mc"]
    assert m.to_dicts()[0]["label"] == 0 and "no labels" in repr(m)
    # subsets keep knowing it
    assert not m.subset([0]).labelled and not m.filter(patients=[hash_patient_id("P2")]).labelled
    assert not m.with_splits({}).labelled


def test_a_label_column_left_empty_in_every_row_counts_as_no_labels(tree: Path) -> None:
    csv = write_csv(tree / "seg.csv", "image,label,mask,patient_id\nscans/a,,ma,P1\nscans/b.dcm, ,mb,P2\n")
    m = Manifest.from_csv(csv, labels_required=False)
    assert not m.labelled and m.classes == [UNLABELLED]
    with pytest.raises(ManifestError, match="row 2: empty 'label'"):  # a classification manifest still needs them
        Manifest.from_csv(csv)


def test_without_labels_required_labels_that_are_there_are_checked_and_used(tree: Path) -> None:
    csv = write_csv(tree / "seg.csv", "image,label,mask,patient_id\nscans/a,big,ma,P1\nscans/b.dcm,small,mb,P2\n")
    m = Manifest.from_csv(csv, labels_required=False)
    assert m.labelled and m.classes == ["big", "small"] and m.labels == [0, 1]
    partial = write_csv(tree / "partial.csv", "image,label,mask,patient_id\nscans/a,big,ma,P1\nscans/b.dcm,,mb,P2\n")
    with pytest.raises(ManifestError, match="row 3: empty 'label'"):
        Manifest.from_csv(partial, labels_required=False)


def test_classes_given_for_a_manifest_without_labels_is_an_error(tree: Path) -> None:
    csv = write_csv(tree / "seg.csv", "image,mask,patient_id\nscans/a,ma,P1\n")
    with pytest.raises(ManifestError, match=r"has no 'label' values, but the classes \['a', 'b'\] were given"):
        Manifest.from_csv(csv, classes=["a", "b"], labels_required=False)


def test_a_classification_manifest_without_a_label_column_is_still_an_error(tree: Path) -> None:
    csv = write_csv(tree / "seg.csv", "image,mask,patient_id\nscans/a,ma,P1\n")
    with pytest.raises(ManifestError, match="missing column 'label'"):
        Manifest.from_csv(csv)
