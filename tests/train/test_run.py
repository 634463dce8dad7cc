"""fine_tune end to end on small real files: 2D DICOM, 3D NIfTI, 2.5D; the run directory; predict/evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml
from helpers.tasks import base_config

from medtl.errors import TrainingError
from medtl.train import evaluate, fine_tune, predict

RUN_FILES = {
    "config.yaml",
    "splits.csv",
    "preprocessing.json",
    "metrics.csv",
    "best.ckpt",
    "last.ckpt",
    "predictions_val.csv",
    "predictions_test.csv",
    "load_report.json",
    "model_card.md",
    "result.json",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def xray_run(xray_task: Path, tmp_path_factory: pytest.TempPathFactory):
    """A scratch resnet18 on 32x32 radiographs: 24 patients, 4 epochs of 3 steps of 4 images."""
    out = tmp_path_factory.mktemp("runs")
    cfg = base_config(
        xray_task,
        out,
        preprocess={"size": [32, 32]},
        train={"epochs": 4, "batch_size": 4, "lr": 1e-3, "monitor": "val_loss"},
        output={"name": "xray"},
    )
    return fine_tune(cfg, quiet=True), xray_task, cfg


def test_2d_run_learns_and_writes_the_run_directory(xray_run) -> None:
    result, _, _ = xray_run
    run_dir = result.run_dir
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    metrics = _rows(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in metrics] == [1, 2, 3, 4]
    assert list(metrics[0]) == [
        "epoch",
        "time_s",
        "train_loss",
        "val_loss",
        "val_auroc",
        "val_accuracy",
        "val_balanced_accuracy",
        "val_f1",
        "val_ece",
        "val_brier",
        "lr",
    ]
    times = [float(r["time_s"]) for r in metrics]
    assert times == sorted(times) and times[0] > 0
    # learnable: a bright disc vs none. Threshold: validation AUROC >= 0.9 and accuracy >= 0.8 (6 scans)
    assert result.metrics["val"]["auroc"] >= 0.9
    assert max(float(r["val_accuracy"]) for r in metrics) >= 0.8
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "ok" and res["epochs_run"] == 4 and res["best_epoch"] in (1, 2, 3, 4)
    assert res["metrics"]["val"]["auroc"] == pytest.approx(result.metrics["val"]["auroc"])
    assert res["weights"]["weights"] == "scratch" and res["mode"] == "2d" and res["modality"] == "XR"
    # per-scan predictions, one row per val/test scan, probabilities summing to one
    preds = _rows(run_dir / "predictions_val.csv")
    assert len(preds) == res["n_scans"]["val"] == result.metrics["val"]["n"]
    assert list(preds[0])[:5] == ["image", "patient_id", "label", "prob_negative", "prob_positive"]
    assert all(abs(float(p["prob_negative"]) + float(p["prob_positive"]) - 1) < 1e-4 for p in preds)
    # no patient crosses splits
    splits = {r["patient_id"]: r["split"] for r in _rows(run_dir / "splits.csv")}
    val_p = {p["patient_id"] for p in preds}
    test_p = {p["patient_id"] for p in _rows(run_dir / "predictions_test.csv")}
    assert all(splits[p] == "val" for p in val_p) and all(splits[p] == "test" for p in test_p)
    card = (run_dir / "model_card.md").read_text()
    assert "## Metrics" in card and "percentiles" in card
    # the card says which weights were tested: the last epoch's by default, as result.json's best_epoch says
    result_json = json.loads((run_dir / "result.json").read_text())
    assert f"- Tested weights: epoch {result_json['best_epoch']}, the last (train.select: last)" in card
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 4 and cfg["train"]["precision"] == "auto"


def test_predict_and_evaluate_reuse_the_runs_preprocessing(xray_run, tmp_path: Path) -> None:
    result, manifest, _ = xray_run
    val_rows = _rows(result.run_dir / "predictions_val.csv")
    files = [r["image"] for r in val_rows]
    rows = predict(result.run_dir, files, out=tmp_path / "p.csv")
    assert [r["image"] for r in rows] == files
    for got, want in zip(rows, val_rows, strict=True):
        assert got["prob_positive"] == pytest.approx(float(want["prob_positive"]), abs=1e-4)
    assert "label" not in _rows(tmp_path / "p.csv")[0]
    # the manifest holds the run's own training and validation patients: refused, or scored apart
    with pytest.raises(TrainingError, match="--allow-seen"):
        evaluate(result.run_dir, manifest)
    m = evaluate(result.run_dir, manifest, allow_seen=True, out=tmp_path / "e.csv")
    res = json.loads((result.run_dir / "result.json").read_text())
    assert m["n"] == res["n_scans"]["test"] and 0.0 <= m["auroc"] <= 1.0 and len(m["confusion_matrix"]) == 2
    assert m["seen"]["train"]["n"] == res["n_scans"]["train"] and m["seen"]["val"]["n"] == res["n_scans"]["val"]
    assert m["auroc"] == pytest.approx(res["metrics"]["test"]["auroc"], abs=1e-4)
    assert {r["split"] for r in _rows(tmp_path / "e.csv")} == {"train", "val", "test"}


def test_3d_run_end_to_end(volume_task: Path, tmp_path: Path) -> None:
    cfg = base_config(
        volume_task,
        tmp_path,
        data={"modality": "CT"},
        preprocess={"size": [16, 16, 16], "ct_window": [-200, 800]},
        model={"arch": "resnet10_3d"},
        train={"epochs": 2, "cache": "disk"},
        augment={"enabled": True, "noise_std": 0.01},
    )
    result = fine_tune(cfg, quiet=True)
    assert RUN_FILES <= {p.name for p in result.run_dir.iterdir()}
    res = json.loads((result.run_dir / "result.json").read_text())
    assert res["mode"] == "3d" and res["epochs_run"] == 2
    pre = json.loads((result.run_dir / "preprocessing.json").read_text())
    assert pre["model_spatial_dims"] == 3 and pre["in_channels"] == 1
    assert len(_rows(result.run_dir / "predictions_test.csv")) == res["n_scans"]["test"] == 4


def test_2p5d_aggregates_slices_per_scan(volume_task: Path, tmp_path: Path) -> None:
    cfg = base_config(
        volume_task,
        tmp_path,
        data={"mode": "2.5d", "slices_per_scan": 3, "modality": "CT"},
        preprocess={"size": [16, 16]},
        train={"epochs": 1},
    )
    result = fine_tune(cfg, quiet=True)
    pre = json.loads((result.run_dir / "preprocessing.json").read_text())
    assert pre["mode"] == "2.5d" and pre["in_channels"] == 3 and pre["model_spatial_dims"] == 2
    preds = _rows(result.run_dir / "predictions_val.csv")
    assert len(preds) == 4  # one row per scan, not per slice
    assert len({p["image"] for p in preds}) == 4


class _Kill(pl.Callback):
    """Stops the process mid-epoch (after one batch of the second epoch), as a kill would."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise _Killed


class _Killed(Exception):
    pass


class _Epochs(pl.Callback):
    def __init__(self) -> None:
        self.started: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.started.append(trainer.current_epoch)


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(xray_run, tmp_path: Path) -> None:
    reference, _, cfg = xray_run
    cfg = dict(cfg, output={"dir": str(tmp_path), "name": "killed"})
    with pytest.raises(_Killed):
        fine_tune(cfg, quiet=True, callbacks=[_Kill()])
    run_dir = tmp_path / "killed"
    assert [int(r["epoch"]) for r in _rows(run_dir / "metrics.csv")] == [1]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    with pytest.raises(TrainingError, match="already holds a run"):
        fine_tune(cfg, quiet=True)
    # resume continues the run's own config: another config is refused with the fields that differ
    with pytest.raises(TrainingError, match=r"preprocess.size: run \[32, 32\], asked \[16, 16\]"):
        fine_tune(dict(cfg, preprocess={"size": [16, 16]}), run_dir=run_dir, resume=True, quiet=True)
    epochs = _Epochs()
    resumed = fine_tune(cfg, run_dir=run_dir, resume=True, quiet=True, callbacks=[epochs])
    assert epochs.started == [1, 2, 3]  # the finished epoch (0) is not repeated
    got = _rows(run_dir / "metrics.csv")
    want = _rows(reference.run_dir / "metrics.csv")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == ["1", "2", "3", "4"]
    assert list(got[0]) == list(want[0])
    assert all(r["val_auroc"] != "" for r in got)
    # same seed, same batches, same augmentation: the resumed run's metrics are the uninterrupted run's
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if k != "time_s"} == {k: v for k, v in w.items() if k != "time_s"}
    times = [float(r["time_s"]) for r in got]
    assert times == sorted(times)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    assert resumed.metrics["test"]["n"] == reference.metrics["test"]["n"]


def test_resume_needs_a_checkpoint(tmp_path: Path, xray_run) -> None:
    _, _, cfg = xray_run
    with pytest.raises(TrainingError, match="no last.ckpt"):
        fine_tune(cfg, run_dir=tmp_path / "empty", resume=True, quiet=True)


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.skipif(not (SAMPLE / "xray" / "manifest.csv").is_file(), reason="sample_data not generated")
def test_sample_xray_2d_run(tmp_path: Path) -> None:
    cfg = base_config(
        SAMPLE / "xray" / "manifest.csv", tmp_path, preprocess={"size": [32, 32]}, train={"epochs": 1, "batch_size": 8}
    )
    result = fine_tune(cfg, quiet=True)
    res = json.loads((result.run_dir / "result.json").read_text())
    assert res["status"] == "ok" and res["modality"] == "XR" and res["mode"] == "2d"
    assert sum(res["n_scans"].values()) == 52
    assert len(_rows(result.run_dir / "predictions_test.csv")) == res["n_scans"]["test"]


@pytest.mark.skipif(not (SAMPLE / "ct" / "manifest.csv").is_file(), reason="sample_data not generated")
@pytest.mark.slow  # a 3D DICOM run; test_3d_run_end_to_end covers 3D by default
def test_sample_ct_dicom_3d_run_keeps_patients_together(tmp_path: Path) -> None:
    cfg = base_config(
        SAMPLE / "ct" / "manifest.csv",
        tmp_path,
        preprocess={"size": [16, 16, 8]},
        model={"arch": "resnet10_3d"},
        train={"epochs": 1, "batch_size": 8},
    )
    result = fine_tune(cfg, quiet=True)
    res = json.loads((result.run_dir / "result.json").read_text())
    assert res["modality"] == "CT" and res["mode"] == "3d" and sum(res["n_scans"].values()) == 54
    assert sum(res["n_patients"].values()) == 44  # 10 patients have two studies: same split for both
    splits = {r["patient_id"]: r["split"] for r in _rows(result.run_dir / "splits.csv")}
    assert len(splits) == 44 and all(len(p) == 16 for p in splits)  # hashed IDs, never SYN-CT-...
    for name in ("val", "test"):
        for row in _rows(result.run_dir / f"predictions_{name}.csv"):
            assert splits[row["patient_id"]] == name


def test_early_stopping_ends_a_run_that_stops_improving(xray_task: Path, tmp_path: Path) -> None:
    # a learning rate of 1e-9 leaves the weights where they are: validation accuracy cannot keep rising,
    # so with patience 1 the run ends well before its 6 epochs
    cfg = base_config(
        xray_task,
        tmp_path,
        preprocess={"size": [32, 32]},
        train={"epochs": 6, "lr": 1e-9, "patience": 1, "monitor": "val_accuracy"},
        output={"name": "early"},
    )
    result = fine_tune(cfg, quiet=True)
    res = json.loads((result.run_dir / "result.json").read_text())
    assert res["stopped_early"] is True and res["epochs_run"] < 6
    assert len(_rows(result.run_dir / "metrics.csv")) == res["epochs_run"]


def test_same_config_same_seed_same_run(xray_task: Path, tmp_path: Path) -> None:
    # augmentation on: every random draw (init, shuffling, augmentation, precise BN) follows train.seed
    def run(name: str) -> list[dict[str, str]]:
        cfg = base_config(
            xray_task,
            tmp_path,
            preprocess={"size": [32, 32]},
            augment={"enabled": True, "affine_prob": 0.5, "noise_std": 0.05},
            train={"epochs": 2},
            output={"name": name},
        )
        rows = _rows(fine_tune(cfg, quiet=True).run_dir / "metrics.csv")
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]

    assert run("a") == run("b")
