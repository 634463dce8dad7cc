"""``medtl compare`` when its runs cannot succeed: one line, exit != 0, no traceback, what finished is kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import helpers.compare as helpers
import pytest
import yaml
from helpers.cli import assert_one_line_error
from helpers.tasks import base_config, make_xray_task

import medtl.train
from medtl.cli import main


def test_a_required_arm_without_its_weights_stops_compare_at_its_first_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """ImageNet weights absent from a fresh cache, offline: the first ImageNet run ends the comparison.

    Real training (no stand-in engine), through ``medtl.cli.main`` in this process.
    """
    task = make_xray_task(tmp_path / "xray", n_patients=16, size=16)
    cfg = base_config(task, tmp_path / "runs", preprocess={"size": [16, 16]}, train={"epochs": 1, "threads": 1})
    cfg["compare"] = {
        "arms": [{"name": "imagenet", "model": {"weights": "imagenet"}}, {"name": "scratch"}],
        "seeds": 2,
        "fractions": [1.0],
        "n_resamples": 200,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    out = tmp_path / "cmp"
    code = main(["compare", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    proc = subprocess.CompletedProcess(["medtl"], code, captured.out, captured.err)
    line = assert_one_line_error(proc, "imagenet")
    assert "cannot train" in line and str(out / "report.html") in line, line
    runs = json.loads((out / "results.json").read_text())["runs"]
    # the plan is imagenet seed 0, scratch seed 0, imagenet seed 1, ...: it stopped at the first failure
    assert [(r["arm"], r["status"]) for r in runs] == [("imagenet", "failed")], runs
    assert not (out / "runs" / "scratch").exists()
    assert (out / "report.md").is_file()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> helpers.FakeEngine:
    fake = helpers.FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", fake)
    return fake


def _compare_config(tmp_path: Path, arms: str) -> Path:
    helpers.write_manifest(tmp_path / "data")
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 2}\n"
        "compare:\n"
        f"  arms:\n{arms}"
        "  seeds: 2\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )
    return cfg


def test_every_run_failing_is_one_line_and_a_non_zero_exit(tmp_path: Path, monkeypatch, capsys) -> None:
    """Training that always raises (not a setup error): every run is tried, then compare says so and fails."""
    calls: list[str] = []

    def always_raises(config, *, run_dir, quiet=False):
        calls.append(str(run_dir))
        raise RuntimeError("CUDA error: out of memory while training")

    monkeypatch.setattr(medtl.train, "fine_tune", always_raises)
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    cfg = _compare_config(
        tmp_path,
        "    - {name: imagenet, model: {weights: imagenet}}\n    - {name: scratch, model: {weights: scratch}}\n",
    )
    out = tmp_path / "cmp"
    code = main(["compare", str(cfg), "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("error: every run failed; the first: RuntimeError: CUDA error: out of memory"), err
    assert str(out / "report.html") in err[0]
    assert len(calls) == 4  # two arms x two seeds, each tried
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["failed"] * 4
    assert (out / "report.md").is_file()


def test_a_failing_arm_keeps_the_runs_that_finished(tmp_path: Path, engine, monkeypatch, capsys) -> None:
    """A required arm whose checkpoint is corrupt (a setup error) after another arm's run finished."""
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    cfg = _compare_config(
        tmp_path,
        f"    - {{name: scratch, model: {{weights: scratch}}}}\n    - {{name: mine, model: {{weights: {broken}}}}}\n",
    )
    out = tmp_path / "cmp"

    def corrupt(config, *, run_dir, quiet=False):
        if Path(config.model.weights).name == "broken.pth":
            from medtl.errors import UnsafeCheckpointError

            raise UnsafeCheckpointError(f"{config.model.weights} is not a checkpoint medtl can read safely")
        return engine(config, run_dir=run_dir, quiet=quiet)

    monkeypatch.setattr(medtl.train, "fine_tune", corrupt)
    code = main(["compare", str(cfg), "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(err) == 1, err
    assert "arm 'mine' cannot train" in err[0] and "broken.pth" in err[0], err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["arm"], r["status"]) for r in runs] == [("scratch", "ok"), ("mine", "failed")]
    assert (out / "runs" / "scratch" / "frac1-seed0" / "result.json").is_file()
    assert len(engine.calls) == 1  # the second seed was not started


def test_demo_offline_on_a_fresh_cache_stops_at_the_first_imagenet_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """``medtl demo`` offline without cached ImageNet weights: one line, exit != 0, no scratch runs trained."""
    import medtl.comparison.demo as demo

    task = make_xray_task(tmp_path / "xray", n_patients=24, size=32)
    monkeypatch.setattr(demo, "prepare_demo_data", lambda folder: task)  # the demo's 800 radiographs take a while
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out)])
    captured = capsys.readouterr()
    line = assert_one_line_error(subprocess.CompletedProcess(["medtl"], code, captured.out, captured.err), "imagenet")
    assert "not cached" in line and "medtl weights import" in line, line
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["failed"], runs
    assert not (out / "runs" / "scratch").exists()


def test_a_warning_is_one_line_without_source_code() -> None:
    code = (
        "import warnings, medtl.cli as cli\n"
        "msg = 'manifest m.csv has no patient_id column;\\n  each scan is its own patient'\n"
        "cli.app = lambda **kw: warnings.warn(msg)\n"
        "raise SystemExit(cli.main([]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "warning: manifest m.csv has no patient_id column; each scan is its own patient\n"
