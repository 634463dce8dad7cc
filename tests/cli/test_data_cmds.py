"""``medtl index`` through medtl.cli.main, as a user would run it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from helpers.dicom import write_cr, write_ct_stack

from medtl.cli import main


def test_index_writes_a_manifest_and_lists_unreadable_files(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    write_ct_stack(root / "negative" / "p1", "P1", 3)
    write_cr(root / "positive" / "p2.dcm", "P2")
    (root / "positive" / "broken.dcm").write_bytes(b"DICM but not really" * 10)
    out = tmp_path / "lists" / "manifest.csv"

    assert main(["index", str(root), "--out", str(out), "--labels-from-folders"]) == 0
    captured = capsys.readouterr()
    assert f"wrote 2 row(s) to {out}" in captured.out
    assert "1 file(s) could not be read" in captured.err and "broken.dcm: " in captured.err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["image"], r["label"], r["modality"]) for r in rows] == [
        ("../data/negative/p1", "negative", "CT"),
        ("../data/positive/p2.dcm", "positive", "CR"),
    ]


def test_index_json_and_empty_labels_hint(tmp_path: Path, capsys) -> None:
    write_ct_stack(tmp_path / "s", "P1", 2)
    out = tmp_path / "m.csv"
    assert main(["index", str(tmp_path), "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out"] == str(out) and len(data["rows"]) == 1 and data["rows"][0]["label"] == ""
    assert "P1" not in json.dumps(data)
    assert main(["index", str(tmp_path), "--out", str(out)]) == 0
    assert "label column is empty" in capsys.readouterr().out


def test_index_of_a_missing_folder_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["index", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "m.csv").exists()
