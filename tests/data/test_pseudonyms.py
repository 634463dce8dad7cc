"""Patient pseudonyms: a keyed HMAC under a per-installation secret, and free text scrubbed of identifiers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.dicom import write_series

from medtl.errors import ConfigError
from medtl.utils import hash_patient_id


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDTL_ID_SECRET", raising=False)
    monkeypatch.delenv("MEDTL_ID_SECRET_FILE", raising=False)
    return tmp_path / "home"


def test_the_secret_is_created_on_first_use_private_and_kept(home: Path) -> None:
    assert not (home / "id-secret").exists()
    first = hash_patient_id("PAT-0001")
    secret_file = home / "id-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes().strip()
    assert len(secret) >= 32
    # the pseudonym is HMAC-SHA256 of the ID under that secret, not a public salted hash
    assert first == hmac.new(secret, b"PAT-0001", hashlib.sha256).hexdigest()[:16]
    assert first != hashlib.sha256(b"medtl:PAT-0001").hexdigest()[:16]
    assert hash_patient_id(" PAT-0001 ") == first and hash_patient_id("") == "" and hash_patient_id(None) == ""
    assert secret_file.read_bytes().strip() == secret  # used again, not replaced


def test_two_installations_give_different_pseudonyms_and_a_shared_secret_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    a = hash_patient_id("PAT-0001")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "other-machine"))
    b = hash_patient_id("PAT-0001")
    assert a != b
    # the study's way to agree: one secret file shared (or copied), or the secret in the environment
    monkeypatch.setenv("MEDTL_ID_SECRET_FILE", str(home / "id-secret"))
    assert hash_patient_id("PAT-0001") == a
    monkeypatch.delenv("MEDTL_ID_SECRET_FILE")
    monkeypatch.setenv("MEDTL_ID_SECRET", (home / "id-secret").read_text().strip())
    assert hash_patient_id("PAT-0001") == a


def test_a_dictionary_attack_without_the_secret_finds_nothing(home: Path) -> None:
    targets = {hash_patient_id(f"{i:06d}") for i in range(0, 2000, 7)}
    # what an attacker could compute: every sequential ID under the old public salt, or unsalted
    guesses = {hashlib.sha256(f"medtl:{i:06d}".encode()).hexdigest()[:16] for i in range(2000)}
    guesses |= {hashlib.sha256(f"{i:06d}".encode()).hexdigest()[:16] for i in range(2000)}
    assert targets.isdisjoint(guesses)


def test_bad_secrets_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("MEDTL_ID_SECRET", "short")
    with pytest.raises(ConfigError, match="MEDTL_ID_SECRET holds 5 character"):
        hash_patient_id("P")
    monkeypatch.delenv("MEDTL_ID_SECRET")
    monkeypatch.setenv("MEDTL_ID_SECRET_FILE", str(tmp_path / "missing-secret"))
    with pytest.raises(ConfigError, match="missing-secret"):
        hash_patient_id("P")


def test_a_read_only_home_cannot_hold_a_new_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("MEDTL_HOME", str(ro / "home"))
    monkeypatch.delenv("MEDTL_ID_SECRET", raising=False)
    with pytest.raises(ConfigError, match="MEDTL_ID_SECRET"):
        hash_patient_id("P")


def test_concurrent_processes_agree_on_one_secret(tmp_path: Path) -> None:
    env = dict(os.environ, MEDTL_HOME=str(tmp_path / "home"))
    env.pop("MEDTL_ID_SECRET", None)
    env.pop("MEDTL_ID_SECRET_FILE", None)
    code = "from medtl.utils import hash_patient_id; print(hash_patient_id('P1'))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(outs) == 1 and len(next(iter(outs))) == 16
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["id-secret"]  # no temporary files left


def test_descriptions_lose_the_patients_name_and_id_before_any_output(home: Path, tmp_path: Path) -> None:
    import numpy as np

    from medtl.cli import main
    from medtl.data import index_tree

    folder = tmp_path / "s"
    paths = write_series(
        folder, np.zeros((2, 4, 4), np.int16), patient_id="MRN123456", description="CT DOE JOHN mrn123456 axial"
    )
    import pydicom

    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientName = "Doe^John"
        ds.StudyDescription = "for John Doe"
        ds.save_as(p)
    rows = index_tree(tmp_path).table()
    assert rows[0]["description"] == "CT [removed] [removed] [removed] axial"
    out = subprocess.run(
        [str(Path(sys.executable).with_name("medtl")), "inspect", str(folder), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    ).stdout
    data = json.loads(out)
    text = json.dumps(data).lower()
    assert "doe" not in text and "john" not in text and "mrn123456" not in text
    assert data["series"][0]["patient_id"] == hash_patient_id("MRN123456")
    assert main(["index", str(folder), "--out", str(tmp_path / "m.csv")]) == 0
    written = (tmp_path / "m.csv").read_text().lower()
    assert "doe" not in written and "john" not in written and "mrn123456" not in written
