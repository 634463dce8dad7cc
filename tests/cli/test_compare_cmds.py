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


@pytest.fixture
def small_demo(monkeypatch):
    """The built-in demo config with 24 generated patients instead of hundreds (the engine is a stand-in)."""
    import medtl.comparison.demo as demo

    real = demo.demo_data_settings
    monkeypatch.setattr(demo, "demo_data_settings", lambda: {**real(), "patients": 24})


def test_demo_command(tmp_path, engine, small_demo, capsys, monkeypatch):
    # the demo writes its own data: it needs no sample_data folder (an installed package has none)
    monkeypatch.setenv("MEDTL_SAMPLE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "report: " + str(out / "report.html") in text
    from medtl.comparison.demo import _raw_config

    built_in = _raw_config()["compare"]
    weights = {c[0] for c in engine.calls}
    assert weights == {"imagenet", "scratch"}
    assert len(engine.calls) == 2 * built_in["seeds"] * len(built_in["fractions"])
    assert (out / "report.md").is_file()
    data = out / "data"
    assert len(list(data.glob("*.dcm"))) == 24 and (data / "manifest.csv").is_file()

    # a second demo elsewhere writes the same bytes
    out2 = tmp_path / "demo2"
    assert main(["demo", "--out", str(out2)]) == 0
    first = {p.name: p.read_bytes() for p in data.iterdir()}
    second = {p.name: p.read_bytes() for p in (out2 / "data").iterdir()}
    assert first.keys() == second.keys() and all(first[k] == second[k] for k in first)
    assert len(engine.calls) == 4 * built_in["seeds"] * len(built_in["fractions"])


def test_demo_again_reuses_its_data_and_runs(tmp_path, engine, small_demo, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    n_runs = len(engine.calls)
    stamp = (out / "data" / "manifest.csv").stat().st_mtime_ns
    assert main(["demo", "--out", str(out)]) == 0
    assert len(engine.calls) == n_runs  # finished runs are reused
    assert (out / "data" / "manifest.csv").stat().st_mtime_ns == stamp
