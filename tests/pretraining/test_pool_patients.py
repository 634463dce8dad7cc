"""Patients of the unlabeled pool: each ID pseudonymised once, whichever way it arrives, and only counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import write_radiograph

from medtl.pretraining.config import load_pretrain_config
from medtl.pretraining.data import _patient_key, read_pool
from medtl.utils import hash_patient_id


@pytest.fixture
def scans(tmp_path: Path, home: Path) -> Path:
    """Six radiographs of three patients (two each), PatientID in every DICOM header."""
    rng = np.random.default_rng(0)
    for i, pid in enumerate(["ANNA-01", "ANNA-01", "BERT-02", "BERT-02", "CARL-03", "CARL-03"]):
        write_radiograph(tmp_path / f"s{i}.dcm", rng.integers(0, 4000, (16, 16)).astype(np.uint16), pid)
    return tmp_path


def _pool(scans: Path, rows: list[str], header: str = "image,patient_id") -> object:
    (scans / "pool.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    cfg = load_pretrain_config({"data": {"manifest": str(scans / "pool.csv")}, "model": {"arch": "resnet18"}})
    return read_pool(cfg)


def test_a_patient_id_is_pseudonymised_once_whether_from_the_manifest_or_the_header(scans: Path) -> None:
    # patient_id given in the manifest for some rows, left to the DICOM header for the others: the same three
    # patients. A second hashing on one path (a pseudonym of a pseudonym) would count them as more.
    pool = _pool(scans, ["s0.dcm,ANNA-01", "s1.dcm,", "s2.dcm,BERT-02", "s3.dcm,", "s4.dcm,", "s5.dcm,CARL-03"])
    assert pool.n_patients == 3
    assert _patient_key({"image": str(scans / "s1.dcm")}) == hash_patient_id("ANNA-01")
    assert _patient_key({"image": str(scans / "s1.dcm"), "patient_id": "ANNA-01"}) == hash_patient_id("ANNA-01")
    assert hash_patient_id("ANNA-01") != hash_patient_id(hash_patient_id("ANNA-01"))  # the test can tell


def test_the_pool_keeps_no_patient_identity(scans: Path) -> None:
    pool = _pool(scans, [f"s{i}.dcm" for i in range(6)], header="image")
    assert pool.n_patients == 3
    assert all("patient_id" not in r for r in pool.records)
    text = repr(pool.records)
    assert "ANNA" not in text and hash_patient_id("ANNA-01") not in text
