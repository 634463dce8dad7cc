"""``medtl inspect`` and ``medtl convert`` through medtl.cli.main, as a user would run them."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from helpers.dicom import random_raw, write_series
from pydicom.data import get_testdata_file

from medtl.cli import main


def test_inspect_text_and_json(tmp_path, capsys):
    write_series(tmp_path, random_raw((5, 6, 7)), series_uid="1.2.3.5", description="abdomen")
    write_series(tmp_path, random_raw((2, 6, 7)), series_uid="1.2.3.6", description="scout")
    (tmp_path / "junk").write_bytes(b"hello, not a scan")
    assert main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "1.2.3.5" in text and "'abdomen'" in text and "axial (LPS)" in text and "junk" in text
    assert "shape 7 x 6 x 5" in text and "spacing 0.7 x 0.8 x 2.5 mm" in text
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_uid = {s["uid"]: s for s in data["series"]}
    assert by_uid["1.2.3.5"]["n_slices"] == 5 and by_uid["1.2.3.6"]["shape"] == [7, 6, 2]
    assert data["unreadable"][0]["path"].endswith("junk")
    assert "PAT-001" not in json.dumps(data)


def test_convert_writes_the_chosen_series(tmp_path, capsys):
    write_series(tmp_path / "in", random_raw((5, 6, 7)), series_uid="1.2.3.5", description="abdomen")
    write_series(tmp_path / "in", random_raw((2, 6, 7), seed=3), series_uid="1.2.3.6", description="scout")
    out = tmp_path / "scout.nii.gz"
    assert main(["convert", str(tmp_path / "in"), str(out), "--series", "scout"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "chose series 1.2.3.6" in captured.err
    assert nib.load(out).shape == (7, 6, 2)
    raw = random_raw((2, 6, 7), seed=3)
    np.testing.assert_array_equal(nib.load(out).get_fdata(), raw.transpose(2, 1, 0) - 1024.0)


def test_bad_file_gives_one_line_error_and_nonzero_exit(tmp_path, capsys):
    truncated = get_testdata_file("MR_truncated.dcm")
    assert main(["convert", truncated, str(tmp_path / "x.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "truncated" in err and truncated in err
    assert "Traceback" not in err
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", truncated, str(tmp_path / "x.png")]) == 2


def test_convert_irregular_series_needs_allow_irregular(tmp_path, capsys):
    write_series(tmp_path / "gap", random_raw((4, 5, 5)), positions=[0, 2, 6, 8], slice_spacing=2.0)
    out = tmp_path / "gap.nii.gz"
    assert main(["convert", str(tmp_path / "gap"), str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gap of 4.000 mm" in errors[0] and "--allow-irregular" in errors[0]
    assert main(["convert", str(tmp_path / "gap"), str(out), "--allow-irregular"]) == 0
    assert nib.load(out).shape == (5, 5, 5)


def test_top_level_exports():
    import medtl

    assert medtl.read_scan is __import__("medtl.io", fromlist=["read_scan"]).read_scan
    assert callable(medtl.inspect_path) and callable(medtl.convert) and medtl.LoadScand is not None
