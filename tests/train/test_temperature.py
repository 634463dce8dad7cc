"""Temperature scaling (``train.calibrate: temperature``): the fit finds a known temperature; an over-confident model
(sure of a picture whose label is often otherwise on the validation patients) has a lower validation ECE after scaling
and the same predicted classes;
the temperature is recorded in the run and predict and evaluate apply it; other tasks refuse the option."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tasks import base_config, make_xray_task

from medtl.config import load_config
from medtl.errors import ConfigError
from medtl.train import fine_tune, predict
from medtl.train.calibration import collect_logits, fit_temperature, nll
from medtl.train.metrics import ece
from medtl.train.predict import load_run


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    """Labels drawn from softmax(z) and logits 3 z: the likelihood is highest at T = 3."""
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(0, 1.5, (6000, 3)))
    labels = torch.multinomial(z.softmax(1), 1, generator=torch.Generator().manual_seed(0))[:, 0]
    t = fit_temperature(3 * z, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    assert nll(3 * z, labels, t) < min(nll(3 * z, labels, t * 0.9), nll(3 * z, labels, t * 1.1))


def test_fit_temperature_of_separable_logits_stays_in_range() -> None:
    logits = torch.tensor([[3.0, -3.0], [-2.0, 2.0]])
    t = fit_temperature(logits, torch.tensor([0, 1]))
    assert 0.05 <= t < 1.0  # sharper, but bounded (the likelihood has no optimum)
    assert fit_temperature(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) == 1.0


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A deliberately over-confident model: a scratch resnet18 trained on 20 radiographs where the bright disc always
    means positive (it learns to be sure), validated on 12 patients of whom a third carry the other label. It is as
    sure on the validation patients as on the training ones and wrong on a third of them."""
    root = tmp_path_factory.mktemp("shifted")
    manifest = make_xray_task(root, n_patients=40, size=32)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    split = ["train"] * 20 + ["val"] * 12 + ["test"] * 8
    flipped = {20, 23, 26, 29}  # validation patients whose label disagrees with the picture
    other = {"positive": "negative", "negative": "positive"}
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0], "split"])
        w.writeheader()
        w.writerows(
            [
                r | {"label": other[r["label"]] if i in flipped else r["label"], "split": split[i]}
                for i, r in enumerate(rows)
            ]
        )
    cfg = base_config(
        manifest,
        tmp_path_factory.mktemp("runs"),
        preprocess={"size": [32, 32]},
        train={"epochs": 6, "batch_size": 4, "lr": 3e-3, "calibrate": "temperature", "precise_bn_batches": 2},
        output={"name": "overconfident"},
    )
    return fine_tune(cfg, quiet=True).run_dir, manifest


@pytest.mark.slow  # trains 6 epochs (about 50 s on two busy cores)
def test_an_overconfident_model_is_better_calibrated_after_scaling(overconfident: tuple[Path, Path]) -> None:
    run_dir, _ = overconfident
    result = json.loads((run_dir / "result.json").read_text())
    cal = result["calibration"]
    assert cal["method"] == "temperature" and cal["temperature"] > 1.0  # it softens an over-confident model
    assert cal["val_ece_after"] < cal["val_ece_before"] and cal["val_nll_after"] < cal["val_nll_before"]
    assert result["metrics"]["val"]["ece"] == pytest.approx(cal["val_ece_after"])  # the run's metrics are calibrated
    assert json.loads((run_dir / "preprocessing.json").read_text())["temperature"] == cal["temperature"]

    # the same arg-max with and without the temperature, and the ECE measured again from the raw logits
    loaded = load_run(run_dir, quiet=True)
    assert loaded.task.temperature == cal["temperature"]
    with open(run_dir / "splits.csv", newline="") as fh:
        val_patients = {r["patient_id"] for r in csv.DictReader(fh) if r["split"] == "val"}
    with open(run_dir / "predictions_val.csv", newline="") as fh:
        val = list(csv.DictReader(fh))
    assert {r["patient_id"] for r in val} == val_patients
    records = [{"image": r["image"], "label": loaded.classes.index(r["label"]), "patient_id": ""} for r in val]
    dataset = loaded.task.eval_dataset(loaded.config, loaded.pipeline, records)
    logits, targets, _ = collect_logits(loaded.model, dataset, loaded.task.target, batch_size=8)
    calibrated = (logits / cal["temperature"]).softmax(1)
    assert torch.equal(calibrated.argmax(1), logits.argmax(1))
    assert [loaded.classes[i] for i in logits.argmax(1).tolist()] == [r["pred"] for r in val]
    assert ece(targets, calibrated) < ece(targets, logits.softmax(1))
    np.testing.assert_allclose(
        calibrated[:, 1].numpy(), [float(r[f"prob_{loaded.classes[1]}"]) for r in val], atol=2e-6
    )


@pytest.mark.slow
def test_predict_applies_the_runs_temperature(overconfident: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, manifest = overconfident
    loaded = load_run(run_dir, quiet=True)
    rows = predict(run_dir, [manifest], out=tmp_path / "p.csv")
    records = [{"image": r["image"], "label": 0, "patient_id": ""} for r in rows[:6]]
    dataset = loaded.task.eval_dataset(loaded.config, loaded.pipeline, records)
    logits, _, _ = collect_logits(loaded.model, dataset, loaded.task.target, batch_size=8)
    expected = (logits / loaded.task.temperature).softmax(1)[:, 1].numpy()
    np.testing.assert_allclose([r[f"prob_{loaded.classes[1]}"] for r in rows[:6]], expected, atol=1e-5)
    assert not np.allclose(expected, logits.softmax(1)[:, 1].numpy(), atol=1e-3)  # the temperature matters here


def test_calibrate_is_refused_for_a_task_without_it(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label\na.dcm,1.5\n")
    cfg = base_config(manifest, tmp_path, train={"calibrate": "temperature"})
    with pytest.raises(ConfigError, match="train.calibrate 'temperature' is not available for a regression run"):
        load_config(cfg | {"task": "regression"})
    assert load_config(base_config(manifest, tmp_path, train={"calibrate": "temperature"})).train.calibrate == (
        "temperature"
    )
