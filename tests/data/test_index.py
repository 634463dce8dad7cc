"""index_tree: one manifest row per series, series column for shared folders, unreadable files with reasons."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers.dicom import write_cr, write_ct_stack, write_image

from medtl.data import IndexResult, Manifest, index_tree
from medtl.errors import NoImagesError
from medtl.utils import hash_patient_id


def write_nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.int16), np.diag([0.9, 0.9, 2.0, 1.0])), path)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_one_row_per_series_with_labels_from_folders_and_paths_relative_to_the_csv(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    write_ct_stack(root / "positive" / "pat1" / "ct", "P1", 4)
    write_ct_stack(root / "negative" / "pat2", "P2", 3)
    write_cr(root / "positive" / "xr" / "IMG0001", "P3")
    write_nifti(root / "negative" / "vol.nii.gz")
    (root / "negative" / "notes.csv").write_text("not an image, and skipped as such\n")

    result = index_tree(root, labels_from_folders=True)
    assert isinstance(result, IndexResult) and result.unreadable == [] and result.warnings == []
    out = result.write_csv(tmp_path / "out" / "manifest.csv")
    rows = read_rows(out)
    assert [(r["image"], r["label"], r["kind"], r["shape"]) for r in rows] == [
        ("../scans/negative/pat2", "negative", "volume", "6x5x3"),
        ("../scans/negative/vol.nii.gz", "negative", "nifti", "4x5x3"),
        ("../scans/positive/pat1/ct", "positive", "volume", "6x5x4"),
        ("../scans/positive/xr/IMG0001", "positive", "image", "7x8"),
    ]
    assert "series" not in rows[0]  # no folder holds two series
    assert rows[0]["modality"] == "CT" and rows[0]["spacing"] == "0.7x0.8x2.5"
    assert rows[3]["modality"] == "CR"

    with pytest.warns(UserWarning, match="NIfTI"):
        m = Manifest.from_csv(out)
    assert [r.image for r in m] == [
        Path(r).resolve()
        for r in (
            root / "negative" / "pat2",
            root / "negative" / "vol.nii.gz",
            root / "positive" / "pat1" / "ct",
            root / "positive" / "xr" / "IMG0001",
        )
    ]
    assert m.patients == [hash_patient_id("P2"), hash_patient_id("vol"), hash_patient_id("P1"), hash_patient_id("P3")]
    assert m.classes == ["negative", "positive"] and m.labels == [0, 0, 1, 1]


def test_a_folder_with_two_series_gives_two_rows_with_a_series_column(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # interleaved file names, as exports write them
    uid_a = write_ct_stack(root / "mixed", "PA", 3, description="axial", names=["IM1", "IM3", "IM5"])
    uid_b = write_ct_stack(root / "mixed", "PB", 2, description="scout", names=["IM2", "IM4"])
    write_ct_stack(root / "alone", "PC", 2)

    result = index_tree(root)
    out = result.write_csv(root / "manifest.csv")
    rows = read_rows(out)
    assert [(r["image"], r["series"], r["description"]) for r in rows] == [
        ("alone", "", "axial"),
        *sorted([("mixed", uid_a, "axial"), ("mixed", uid_b, "scout")]),
    ]
    assert all(r["label"] == "" for r in rows)

    for r in rows:
        r["label"] = "x"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    m = Manifest.from_csv(out)
    patients = {r.series: r.patient_id for r in m}
    assert patients[uid_a] == hash_patient_id("PA") and patients[uid_b] == hash_patient_id("PB")


def test_a_series_spread_over_sub_folders_is_their_common_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_ct_stack(root / "study", "P", 3, names=["s1/a", "s2/b", "s3/c"])
    rows = index_tree(root).table(relative_to=root)
    assert [(r["image"], r["shape"]) for r in rows] == [("study", "6x5x3")]


def test_unreadable_files_are_listed_with_reasons_and_do_not_stop_the_index(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_ct_stack(root / "good", "P", 3)
    (root / "junk").mkdir()
    (root / "junk" / "random.bin").write_bytes(bytes(range(256)) * 4)
    good = next((root / "good").iterdir()).read_bytes()
    (root / "junk" / "truncated.dcm").write_bytes(good[: len(good) // 2 - 7])
    # a structured report
    write_image(
        root / "junk" / "report.dcm", None, sop_class="1.2.840.10008.5.1.4.1.1.88.11", modality="SR", patient_id="P"
    )

    result = index_tree(root)
    assert [Path(r["image"]).name for r in result.rows] == ["good"]
    reasons = {Path(u.path).name: u.reason for u in result.unreadable}
    assert set(reasons) == {"random.bin", "truncated.dcm", "report.dcm"}
    assert all(len(reason) > 10 for reason in reasons.values())
    assert "pixel" in reasons["report.dcm"].lower()
    assert result.to_dict()["unreadable"][0]["path"].endswith("random.bin")


def test_labels_from_folders_warns_for_images_outside_label_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_cr(root / "loose.dcm", "P1")
    write_cr(root / "positive" / "a.dcm", "P2")
    result = index_tree(root, labels_from_folders=True)
    assert {Path(r["image"]).name: r["label"] for r in result.rows} == {"loose.dcm": "", "a.dcm": "positive"}
    assert len(result.warnings) == 1 and "loose.dcm" in result.warnings[0] and "no label folder" in result.warnings[0]


def test_nothing_readable_is_an_error_that_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"\x00" * 300)
    with pytest.raises(NoImagesError, match=r"no readable DICOM series or NIfTI file under .*a\.bin"):
        index_tree(tmp_path)
    with pytest.raises(NoImagesError, match="does not exist"):
        index_tree(tmp_path / "missing")


def test_indexes_the_sample_ct_tree_like_its_manifest() -> None:
    sample = Path(__file__).resolve().parents[2] / "sample_data" / "ct"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = index_tree(sample)
    assert result.unreadable == []
    indexed = sorted(Path(r["image"]).name for r in result.rows)
    listed = sorted(r["image"] for r in read_rows(sample / "manifest.csv"))
    assert indexed == listed


def test_indexing_ordinary_dicom_files_never_imports_pydicom(tmp_path: Path) -> None:
    """The tag scan reads ordinary headers; pydicom (about 0.5 s to import) is loaded only for the rare file."""
    import subprocess
    import sys

    write_ct_stack(tmp_path / "scans" / "pat1", "P1", 4)
    code = (
        "import sys; from medtl.data import index_tree; "
        f"r = index_tree({str(tmp_path / 'scans')!r}); "
        "print(len(r.rows), 'pydicom' in sys.modules)"
    )
    env = {**__import__("os").environ, "MEDTL_HOME": str(tmp_path / "home"), "MEDTL_ID_SECRET": "x" * 32}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]
