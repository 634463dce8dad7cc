"""Hostile headers for privacy: a patient's birth date typed into a description in any common format stays out of
every output (index CSV, ``inspect --json``, the header cache, error messages), and ``predict --dicom-seg`` writes
the patient module for the source's archive by default and a pseudonymised one with ``--deidentify``.

Every file is written here with pydicom (and highdicom through medtl); each case has a good twin (a date that is not
the birth date stays), so that scrubbing everything cannot pass for scrubbing the right thing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers.dicom import write_series

from medtl.io.dicom import scrub_text
from medtl.utils import hash_patient_id

BIRTH = "19450113"
# the birth date 13 January 1945 as people type it
WRITTEN = [
    "1945-01-13",
    "13/01/1945",
    "01/13/1945",
    "19450113",
    "13 Jan 1945",
    "13.01.45",
    "January 13, 1945",
    "13-JAN-1945",
    "1945/1/13",
]
OTHER_DATE = "2019-05-04"  # a date in the description that is not the birth date: kept


@pytest.mark.parametrize(("birth", "written"), [(BIRTH, w) for w in WRITTEN] + [("19450202", "02.02.1945")])
def test_scrub_text_removes_the_birth_date_in_every_written_form(birth: str, written: str) -> None:
    text = f"CT {written} thorax {OTHER_DATE}"
    assert scrub_text(text, [], dates=[birth]) == f"CT [removed] thorax {OTHER_DATE}"
    # the good twin: another patient's birth date leaves the text alone
    assert scrub_text(text, [], dates=["19520707"]) == text


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDTL_INDEX_CACHE", raising=False)
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    return tmp_path / "home"


def _tree(root: Path) -> list[Path]:
    """One series per written form of the birth date, typed into its SeriesDescription; every other series has a
    non-ASCII patient name, which sends its headers through pydicom instead of medtl's raw tag scan."""
    folders = []
    for i, written in enumerate(WRITTEN):
        folder = root / f"p{i}"
        paths = write_series(
            folder,
            np.zeros((2, 4, 4), np.int16),
            patient_id=f"MRN{i:04d}",
            description=f"CT {written} ax {OTHER_DATE}",
            seed=i,
        )
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.PatientBirthDate = BIRTH
            if i % 2:
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.PatientName = "Müller^Jörg"
            ds.save_as(p)
        folders.append(folder)
    return folders


def _leaks(text: str) -> list[str]:
    return [w for w in WRITTEN if w.lower() in text.lower()]


def test_birth_dates_in_descriptions_reach_no_output(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from medtl.cli import main
    from medtl.errors import SeriesNotFoundError
    from medtl.io import read_scan

    root = tmp_path / "scans"
    folders = _tree(root)
    # the index CSV
    assert main(["index", str(root), "--out", str(tmp_path / "m.csv")]) == 0
    written = (tmp_path / "m.csv").read_text()
    assert _leaks(written) == []
    assert written.count(OTHER_DATE) == len(WRITTEN) and written.count("[removed]") >= len(WRITTEN)
    # inspect --json (a second read of the tree: the headers now come from the cache)
    capsys.readouterr()
    assert main(["inspect", str(root), "--json"]) == 0
    out = capsys.readouterr().out
    descriptions = [s["description"] for s in json.loads(out)["series"]]
    assert len(descriptions) == len(WRITTEN) and _leaks(out) == []
    assert all(d == f"CT [removed] ax {OTHER_DATE}" for d in descriptions), descriptions
    # the header cache on disk
    caches = list((home / "cache").glob("*.sqlite"))
    assert caches, "the header cache was not written"
    for cache in caches:
        with sqlite3.connect(cache) as db:
            rows = " ".join(str(v) for table in ("sqlite_master",) for v in db.execute(f"select * from {table}"))
            for (name,) in db.execute("select name from sqlite_master where type = 'table'"):
                rows += " ".join(str(v) for row in db.execute(f"select * from {name}") for v in row)  # noqa: S608
        assert _leaks(rows) == [] and OTHER_DATE in rows
    # error messages that list the series of a folder
    for folder in folders[:3]:
        with pytest.raises(SeriesNotFoundError) as err:
            read_scan(folder, series="no such series")
        assert _leaks(str(err.value)) == [] and OTHER_DATE in str(err.value)


# ------------------------------------------------------------------------------------------------ DICOM SEG out

hd_required = pytest.mark.skipif(not __import__("importlib").util.find_spec("highdicom"), reason="needs highdicom")

PATIENT = {
    "PatientID": "MRN-555-1234",
    "PatientName": "Doe^Jane",
    "PatientBirthDate": BIRTH,
    "PatientSex": "F",
    "PatientAge": "079Y",
    "AccessionNumber": "ACC-98765",
    "OtherPatientIDs": "ALT-4242",
    "PatientComments": "Jane Doe, lives at 12 Elm Street",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDate": "20240102",
    "StudyTime": "101500",
    "StudyID": "S-77",
    "InstitutionName": "St Elsewhere Hospital",
    "StudyDescription": "CT chest Doe 1945-01-13 MRN-555-1234 ACC-98765 follow-up",
}
SECRETS = [
    "MRN-555-1234",
    "Doe",
    "Jane",
    BIRTH,
    "1945-01-13",
    "ACC-98765",
    "ALT-4242",
    "Elm Street",
    "House",
    "Elsewhere",
]


def _ct_series(folder: Path, n_slices: int = 3) -> Path:
    """A small CT series carrying a full patient and study module (what hospital exports hold)."""
    raw = np.zeros((n_slices, 6, 5), np.int16)
    raw[:, 2:4, 1:3] = 800
    write_series(folder, raw, origin=(0.0, 0.0, 0.0), pixel_spacing=(0.8, 0.8), slice_spacing=2.0,
                 patient_id=PATIENT["PatientID"])  # fmt: skip
    for p in folder.iterdir():
        ds = pydicom.dcmread(p)
        for keyword, value in PATIENT.items():
            setattr(ds, keyword, value)
        ds.save_as(p)
    return folder


def _mask_on(folder: Path, path: Path) -> Path:
    from medtl.io import read_scan

    image = read_scan(folder)
    mask = (np.asarray(image[0]) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, np.asarray(image.affine, dtype=np.float64)), path)
    return path


def _all_text(ds: pydicom.Dataset) -> str:
    """Every value in the dataset, nested sequences included, as one string."""
    parts: list[str] = []
    ds.walk(lambda _, elem: parts.append(str(elem.value)) if elem.VR != "SQ" else None)
    return " ".join(parts)


@hd_required
def test_a_seg_for_the_source_archive_keeps_the_patient_module_and_scrubs_the_study_description(
    home: Path, tmp_path: Path
) -> None:
    from medtl.train.predict import write_prediction_seg

    series = _ct_series(tmp_path / "ct")
    mask = _mask_on(series, tmp_path / "ct_mask.nii.gz")
    seg_file = write_prediction_seg(mask, series, classes=["background", "bright"], arch="a", weights="w")
    seg = pydicom.dcmread(seg_file)
    source = pydicom.dcmread(next(series.iterdir()))
    # the patient module, as DICOM requires for the SEG to file with its study in the source's archive
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
        assert str(seg.get(keyword)) == str(source.get(keyword)), keyword
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    # the free text is scrubbed of the patient's name, ID, birth date and accession number
    assert seg.StudyDescription == "CT chest [removed] [removed] [removed] [removed] follow-up"
    assert "PatientIdentityRemoved" not in seg or seg.PatientIdentityRemoved != "YES"


@hd_required
def test_a_deidentified_seg_carries_the_pseudonym_and_no_patient_data_but_still_references_its_source(
    home: Path, tmp_path: Path
) -> None:
    from medtl.io import read_scan
    from medtl.io.dicom_seg import read_dicom_seg
    from medtl.train.predict import write_prediction_seg

    series = _ct_series(tmp_path / "ct")
    mask = _mask_on(series, tmp_path / "ct_mask.nii.gz")
    seg_file = write_prediction_seg(
        mask, series, classes=["background", "bright"], arch="a", weights="w", deidentify=True
    )
    seg = pydicom.dcmread(seg_file)
    source = pydicom.dcmread(next(series.iterdir()))
    pseudonym = hash_patient_id(PATIENT["PatientID"])
    assert seg.PatientID == pseudonym and str(seg.PatientName) == pseudonym
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate", "StudyTime", "StudyID"):
        assert keyword in seg and seg.get(keyword) in ("", None), keyword  # type 2: present, empty
    assert seg.get("PatientAge", "") in ("", None)
    for keyword in ("OtherPatientIDs", "OtherPatientIDsSequence", "PatientComments"):
        assert keyword not in seg, keyword
    assert seg.PatientIdentityRemoved == "YES" and "pseudonym" in str(seg.DeidentificationMethod)
    text = _all_text(seg)
    leaked = [s for s in SECRETS if s.lower() in text.lower()]
    assert leaked == [], leaked
    # still the source's study and frame of reference, referencing its instances: it lines up with its images
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    referenced = {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in
                  s.ReferencedInstanceSequence}  # fmt: skip
    assert referenced == {str(pydicom.dcmread(p).SOPInstanceUID) for p in series.iterdir()}
    # and medtl reads it back on its series (the pseudonym counts as the image's patient)
    back = read_dicom_seg(seg_file, read_scan(series), classes=["background", "bright"])
    np.testing.assert_array_equal(np.asarray(back[0]), np.asarray(nib.load(mask).dataobj))


@hd_required
@pytest.mark.slow  # trains a one-epoch 2D run first (about a minute on 2 shared cores)
def test_cli_predict_dicom_seg_with_and_without_deidentify(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from helpers.seg_tasks import make_disc_task, seg_config

    from medtl.cli import main
    from medtl.train import fine_tune

    task = tmp_path / "discs"
    task.mkdir()
    manifest = make_disc_task(task, n_patients=8, size=32)
    cfg = seg_config(
        manifest,
        tmp_path / "runs",
        model={"arch": "resnet18", "weights": "scratch"},
        segmentation={"decoder_channels": [8, 8, 8, 8, 8]},
        train={"epochs": 1, "batch_size": 4},
    )
    run = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True).run_dir
    series = _ct_series(tmp_path / "ct", n_slices=1)  # one CT slice: a 2D image, as the run was trained on
    capsys.readouterr()
    assert main(["predict", str(run), str(series), "--out", str(tmp_path / "archive"), "--dicom-seg"]) == 0
    # a folder holding one slice is indexed as that one image file: the SEG is named after the file
    (seg_file,) = (tmp_path / "archive").glob("*_seg.dcm")
    archive = pydicom.dcmread(seg_file)
    assert archive.PatientID == PATIENT["PatientID"] and archive.PatientBirthDate == BIRTH
    assert BIRTH not in str(archive.StudyDescription) and "Doe" not in str(archive.StudyDescription)
    args = ["predict", str(run), str(series), "--out", str(tmp_path / "out"), "--dicom-seg", "--deidentify"]
    assert main(args) == 0
    seg = pydicom.dcmread(tmp_path / "out" / seg_file.name)
    assert seg.PatientID == hash_patient_id(PATIENT["PatientID"]) and seg.PatientIdentityRemoved == "YES"
    leaked = [s for s in SECRETS if s.lower() in _all_text(seg).lower()]
    assert leaked == [], leaked
    # --deidentify alone would promise what it cannot do: the NIfTI masks hold no patient data
    capsys.readouterr()
    assert main(["predict", str(run), str(series), "--out", str(tmp_path / "x"), "--deidentify"]) != 0
    err = capsys.readouterr().err
    assert "--dicom-seg" in err and "Traceback" not in err
