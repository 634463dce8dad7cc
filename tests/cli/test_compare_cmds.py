"""``medtl compare`` and ``medtl demo`` from the command line (training replaced by a stand-in engine)."""

from __future__ import annotations

import json
from pathlib import Path

import helpers.compare as helpers
import pytest

import medtl.train
from medtl.cli import main


@pytest.fixture
def engine(monkeypatch):
    fake = helpers.FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", fake)
    return fake


def write_config(tmp_path: Path) -> Path:
    helpers.write_manifest(tmp_path / "data")
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 3}\n"
        "compare:\n"
        "  arms:\n"
        "    - {name: imagenet, label: MobileNetV2 ImageNet, model: {weights: imagenet}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
    )
    return cfg


def test_compare_command(tmp_path, engine, capsys):
    cfg = write_config(tmp_path)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            str(cfg),
            "--seeds",
            "2",
            "--fractions",
            "0.5,1",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--resamples",
            "200",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert len(engine.calls) == 8 and {c[1] for c in engine.calls} == {0, 1}
    assert f"report: {out / 'report.html'}" in " ".join(text.split())
    data = json.loads((out / "results.json").read_text())
    assert data["fractions"] == [0.5, 1.0] and data["summary"]["n_resamples"] == 200
    for row in data["summary"]["rows"]:
        if row["sentence"]:
            assert row["sentence"].split(" with ")[0][:30] in " ".join(text.split())
    assert "[8/8] scratch seed 1 100% labels" in text
    # only one arm: there is nothing to compare it with
    assert main(["compare", str(cfg), "--arms", "imagenet", "--out", str(out)]) == 2
    assert "reference arm 'scratch'" in capsys.readouterr().err


def test_compare_bad_input_is_one_line(tmp_path, engine, capsys):
    cfg = write_config(tmp_path)
    assert main(["compare", str(cfg), "--fractions", "0.1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --fractions '0.1,2'") and "\n" not in err
    assert main(["compare", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert engine.calls == []


def test_demo_command(tmp_path, engine, capsys, monkeypatch):
    data = tmp_path / "sample"
    helpers.write_manifest(data / "xray", n_patients=24)
    monkeypatch.setenv("MEDTL_SAMPLE_DATA", str(data))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "report: " + str(out / "report.html") in text
    from medtl.evaluate.demo import demo_config

    built_in = demo_config(data)["compare"]
    weights = {c[0] for c in engine.calls}
    assert weights == {"imagenet", "scratch"}
    assert len(engine.calls) == 2 * built_in["seeds"] * len(built_in["fractions"])
    assert (out / "report.md").is_file()


def test_demo_without_sample_data(tmp_path, monkeypatch, capsys, engine):
    monkeypatch.setenv("MEDTL_SAMPLE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("medtl.evaluate.demo.Path.resolve", lambda self: tmp_path / "a" / "b" / "c")
    assert main(["demo"]) == 2
    assert "sample data not found" in capsys.readouterr().err
