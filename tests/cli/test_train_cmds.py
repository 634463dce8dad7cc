"""``medtl train / predict / evaluate / lr-find / config`` through the real CLI entry point."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.tasks import base_config, make_xray_task

from medtl.cli import main


@pytest.fixture(scope="module")
def xray_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    manifest = make_xray_task(root / "data", n_patients=16)
    cfg = base_config(manifest, root / "runs", preprocess={"size": [16, 16]}, train={"epochs": 1, "batch_size": 4})
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_validate_and_show(xray_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(xray_config)]) == 0
    assert "ok (resnet18, weights scratch, 1 epochs)" in capsys.readouterr().out
    assert main(["config", "show", str(xray_config), "--set", "train.patience=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["patience"] == 3 and shown["train"]["precision"] == "auto"
    bad = tmp_path / "bad.yaml"
    bad.write_text(xray_config.read_text().replace("batch_size:", "batchsize:"))
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config") and "train.batchsize: unknown field" in err
    assert "did you mean 'batch_size'" in err and "\n" not in err.strip()


def test_train_predict_evaluate_lr_find(xray_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", str(xray_config), "--epochs", "2", "--name", "cli-run", "--set", "train.lr=0.002"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith(f"medtl train: {xray_config}: loading torch, MONAI and Lightning...\n")
    run_dir = Path(yaml.safe_load(xray_config.read_text())["output"]["dir"]) / "cli-run"
    assert f"run: {run_dir}" in out and "epoch 2/2" in out  # plain progress lines when not a terminal
    res = json.loads((run_dir / "result.json").read_text())
    assert res["epochs_run"] == 2 and yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"] == 0.002

    manifest = Path(yaml.safe_load(xray_config.read_text())["data"]["manifest"])
    images = sorted(manifest.parent.glob("*.dcm"))[:3]
    out_csv = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), *map(str, images), "--out", str(out_csv)]) == 0
    assert capsys.readouterr().out.startswith(f"medtl predict: {run_dir}: loading torch")
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["image"]).name for r in rows] == [p.name for p in images]
    assert list(rows[0]) == ["image", "patient_id", "prob_negative", "prob_positive", "pred"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), str(manifest), "--json"]) == 2  # the run's own patients: refused
    assert "--allow-seen" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), str(manifest), "--json", "--allow-seen"]) == 0
    m = json.loads(capsys.readouterr().out)
    result = json.loads((run_dir / "result.json").read_text())
    assert m["n"] == result["n_scans"]["test"] and m["seen"]["train"]["n"] == result["n_scans"]["train"]
    assert set(m) >= {"accuracy", "balanced_accuracy", "auroc", "f1", "confusion_matrix"}
    assert main(["evaluate", str(run_dir), str(manifest), "--grid", "voxel"]) == 2  # a typo: one line, the choices
    err = capsys.readouterr().err
    assert "grid 'voxel' is not one of native, preprocessed" in err and "Traceback" not in err

    png = tmp_path / "lr.png"
    assert main(["lr-find", str(xray_config), "--out", str(png), "--steps", "12"]) == 0
    assert "suggested lr:" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads(png.with_suffix(".json").read_text())
    assert 1e-6 <= curve["suggestion"] <= 1.0 and len(curve["lrs"]) == len(curve["losses"]) >= 5

    assert main(["predict", str(tmp_path), str(images[0])]) == 2  # not a run folder: one-line error
    assert "is not a finished medtl run" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_set_of_results(xray_config: Path, tmp_path: Path) -> None:
    """2 processes (gloo) through `medtl train --devices 2` (Lightning re-launches the command); ~60 s."""
    cfg = yaml.safe_load(xray_config.read_text())
    cfg["output"] = {"dir": str(tmp_path / "runs")}  # no name: workers must find rank 0's folder
    cfg["train"].update({"epochs": 2, "accelerator": "cpu"})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("MEDTL_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "train", str(path), "--devices", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    res = json.loads((runs[0] / "result.json").read_text())
    assert res["status"] == "ok" and res["devices"] == 2
    with open(runs[0] / "metrics.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]
    with open(runs[0] / "predictions_val.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == res["n_scans"]["val"]


def test_pretrain_command_reports_a_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text("data: {folder: .}\nmodel: {arch: resnet18}\nmethod: nope\n")
    assert main(["pretrain", str(cfg)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "method" in err[0] and "simclr" in err[0]


def test_pretrain_command_needs_a_config_or_a_run_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--resume" in err[0]
    assert main(["pretrain", "--resume", str(tmp_path / "no-such-run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no-such-run" in err[0]
