"""Regression (``task: regression``): numeric labels read and checked, binned patient splits, standardised targets,
losses, metrics against scikit-learn and scipy, the comparison's weighted metrics, and a tiny radiograph task whose
target is a disc's radius trained, predicted, evaluated and compared end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tasks import base_config, write_dx
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import cluster_resample_counts
from medtl.comparison.summary import summarize
from medtl.config import load_config
from medtl.errors import ConfigError, ManifestError
from medtl.metric_specs import metric_spec
from medtl.tasks import task_for
from medtl.tasks.regression import (
    PatientRegression,
    RegressionTask,
    StandardisedLoss,
    number_of_bins,
    regression_metrics,
)

#: the disc task: radius in pixels, the target in mm (0.5 mm pixels)
RADIUS_PX = (3.0, 10.0)
PIXEL_MM = 0.5


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def make_disc_task(root: Path, n_patients: int = 48, size: int = 32, seed: int = 0, prefix: str = "PR") -> Path:
    """Radiographs with one bright disc each; the target ``radius_mm`` is its radius (3-10 px of 0.5 mm)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i in range(n_patients):
        radius = rng.uniform(*RADIUS_PX)
        img = rng.normal(1000, 150, (size, size))
        cy, cx = rng.uniform(size * 0.375, size * 0.625, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += 1500
        img[0, 0], img[-1, -1] = 0, 4000  # the same intensity range in every image
        name = f"{prefix.lower()}_{i:03d}.dcm"
        write_dx(root / name, np.clip(img, 0, 4095), f"{prefix}{i:03d}")
        rows.append({"image": name, "radius_mm": f"{radius * PIXEL_MM:.4f}", "patient_id": f"{prefix}{i:03d}"})
    return _write_csv(root / "manifest.csv", rows)


def _config(manifest: Path, out: Path, **sections: dict) -> dict:
    """A regression config of the disc task (``sections`` update base_config's sections)."""
    cfg = base_config(manifest, out, data={"label_column": "radius_mm"}, preprocess={"size": [32, 32]})
    cfg["train"].update(accelerator="cpu", threads=1)
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    cfg["task"] = "regression"
    cfg["regression"] = {"unit": "mm", **cfg.get("regression", {})}
    return cfg


def _table_config(tmp_path: Path, rows: list[dict[str, str]], **extra) -> tuple:
    """A config over a manifest whose images need not exist (check_files=False reads it)."""
    manifest = _write_csv(tmp_path / "m.csv", rows)
    raw = {
        "task": "regression",
        "data": {"manifest": str(manifest), "label_column": "age"},
        "model": {"arch": "resnet18"},
        **extra,
    }
    return load_config(raw), manifest


# ----------------------------------------------------------------------------------------------- manifest


def test_manifest_numbers_are_read_as_floats_and_bad_rows_are_named(tmp_path: Path) -> None:
    rows = [
        {"image": "a.dcm", "age": "61", "patient_id": "P1"},
        {"image": "b.dcm", "age": " 7.25 ", "patient_id": "P2"},
        {"image": "c.dcm", "age": "1e1", "patient_id": "P3"},
        {"image": "d.dcm", "age": "-3", "patient_id": "P4"},
    ]
    cfg, _ = _table_config(tmp_path, rows)
    assert task_for(cfg) is RegressionTask and cfg.train.monitor == "val_mae"
    manifest = RegressionTask.read_manifest(cfg, check_files=False)
    records = RegressionTask.records(cfg, manifest)
    assert [r["target"] for r in records] == [61.0, 7.25, 10.0, -3.0]
    assert [r["label_name"] for r in records] == ["61", "7.25", "1e1", "-3"]
    assert all(isinstance(r["target"], float) for r in records)
    assert RegressionTask.output_names(cfg, manifest) == ["age"]

    bad = rows + [
        {"image": "e.dcm", "age": "", "patient_id": "P5"},
        {"image": "f.dcm", "age": "old", "patient_id": "P6"},
        {"image": "g.dcm", "age": "1,5", "patient_id": "P7"},
        {"image": "h.dcm", "age": "nan", "patient_id": "P8"},
        {"image": "i.dcm", "age": "inf", "patient_id": "P9"},
    ]
    cfg, _ = _table_config(tmp_path, bad)
    with pytest.raises(ManifestError) as err:
        RegressionTask.read_manifest(cfg, check_files=False)
    text = str(err.value)
    assert "column 'age' must hold a finite number" in text
    assert "empty in row 6" in text
    assert "row 7 'old'" in text and "row 8 '1,5'" in text and "decimals with a point" in text
    assert "not finite in row 9 'nan', row 10 'inf'" in text
    assert "\n" not in text.split("fix:")[0].strip()  # one line

    cfg, _ = _table_config(tmp_path, [{"image": "a.dcm", "Age ": "3", "patient_id": "P1"}])
    assert RegressionTask.records(cfg, RegressionTask.read_manifest(cfg, check_files=False))[0]["target"] == 3.0
    cfg, _ = _table_config(tmp_path, [{"image": "a.dcm", "ages": "3", "patient_id": "P1"}])
    with pytest.raises(ManifestError, match=r"no column 'age' \(did you mean 'ages'\?\)"):
        RegressionTask.read_manifest(cfg, check_files=False)


def test_a_label_column_named_label_and_few_distinct_integers_are_fine(tmp_path: Path) -> None:
    rows = [{"image": f"{i}.dcm", "label": str(i % 3), "patient_id": f"P{i}"} for i in range(9)]
    manifest = _write_csv(tmp_path / "m.csv", rows)
    cfg = load_config({"task": "regression", "data": {"manifest": str(manifest)}, "model": {"arch": "resnet18"}})
    records = RegressionTask.records(cfg, RegressionTask.read_manifest(cfg, check_files=False))
    assert [r["target"] for r in records] == [float(i % 3) for i in range(9)]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"train": {"class_balance": "weighted_loss"}}, "train.class_balance"),
        ({"train": {"label_smoothing": 0.1}}, "train.label_smoothing"),
        ({"data": {"classes": ["a", "b"]}}, "data.classes"),
    ],
)
def test_config_refuses_classification_options(tmp_path: Path, override: dict, field: str) -> None:
    raw = {"task": "regression", "data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}}
    for key, value in override.items():
        raw[key] = {**raw.get(key, {}), **value}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        load_config(raw)
    assert "\n" not in str(err.value)
    cfg = load_config({"data": {"manifest": "m.csv"}, "model": {"arch": "resnet18"}, "regression": {"unit": "years"}})
    assert cfg.task == "regression" and cfg.regression.loss == "huber" and cfg.regression.bins == 5


def test_the_sample_regression_manifest_reads_through_its_config() -> None:
    from medtl.data import Manifest

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "xray_regression.yaml")
    manifest = RegressionTask.read_manifest(cfg)
    records = RegressionTask.records(cfg, manifest)
    widths = np.asarray([r["target"] for r in records])
    assert len(records) == 52 and len({r["patient_id"] for r in records}) == 52
    assert 230 < widths.min() and widths.max() < 335 and widths.std() > 15  # body widths in mm
    assert RegressionTask.output_names(cfg, manifest) == ["body_width_mm"]
    # the radiographs of manifest.csv, each with its patient from the DICOM PatientID
    images = {str(r.image): r.patient_id for r in Manifest.from_csv(root / "sample_data" / "xray" / "manifest.csv")}
    assert {r["image"]: r["patient_id"] for r in records} == images
    assert sorted(np.bincount(list(RegressionTask.patient_strata(records).values())).tolist()) == [10, 10, 10, 11, 11]


# --------------------------------------------------------------------------------------------------- splits


def _bin_records(tmp_path: Path, n_patients: int, **splits) -> tuple:
    rng = np.random.default_rng(3)
    rows = []
    for p in range(n_patients):
        for s in range(1 + (p % 4 == 0)):  # some patients have two scans
            rows.append({"image": f"{p}_{s}.dcm", "age": f"{rng.normal(50, 15):.2f}", "patient_id": f"P{p:03d}"})
    cfg, _ = _table_config(tmp_path, rows, splits=splits)
    records = RegressionTask.records(cfg, RegressionTask.read_manifest(cfg, check_files=False))
    return cfg, records


def test_patients_are_split_by_quantile_bins_of_their_mean_target(tmp_path: Path) -> None:
    cfg, records = _bin_records(tmp_path, 50, seed=4)
    strata = RegressionTask.patient_strata(records)
    means: dict[str, list[float]] = {}
    for r in records:
        means.setdefault(r["patient_id"], []).append(r["target"])
    mean = {p: float(np.mean(v)) for p, v in means.items()}
    sizes = np.bincount(list(strata.values()))
    assert sizes.tolist() == [10] * 5  # five bins of equal count
    # bins are ordered: every patient of bin b has a lower mean than every patient of bin b + 1
    for b in range(4):
        assert max(mean[p] for p, s in strata.items() if s == b) < min(mean[p] for p, s in strata.items() if s == b + 1)
    split = RegressionTask.make_splits(records, cfg.splits)
    assert split == RegressionTask.make_splits(records, cfg.splits)  # deterministic
    for name in ("val", "test"):
        got = sorted(strata[p] for p, s in split.items() if s == name)
        assert got == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], name  # 20% of each bin
    # splits.csv shows each patient's mean target
    first = records[0]["patient_id"]  # pseudonymised
    assert RegressionTask.split_label_text(records)[first] == f"{mean[first]:.6g}"
    # nested label fractions: 10% among 25% among 50%, every bin kept
    train = sorted(p for p, s in split.items() if s == "train")
    chosen = {f: set(RegressionTask.fraction_patients(train, records, f, seed=4)) for f in (0.1, 0.25, 0.5, 1.0)}
    assert chosen[0.1] <= chosen[0.25] <= chosen[0.5] <= chosen[1.0] == set(train)
    assert {strata[p] for p in chosen[0.1]} == set(range(5))


def test_fewer_bins_when_few_patients(tmp_path: Path) -> None:
    cfg, records = _bin_records(tmp_path, 12, val_fraction=0.2, test_fraction=0.2)
    assert number_of_bins(12, 5, cfg.splits) == 2  # a bin of 5 gives one val and one test patient at 20%
    assert sorted(set(RegressionTask.patient_strata(records).values())) == [0, 1]
    split = RegressionTask.make_splits(records, cfg.splits)
    assert sum(s == "val" for s in split.values()) >= 2 and sum(s == "test" for s in split.values()) >= 2
    cfg, _ = _bin_records(tmp_path, 12, val_fraction=0.1, test_fraction=0.3)
    assert number_of_bins(40, 5, cfg.splits) == 4  # 10 patients per bin for 10% validation
    assert number_of_bins(3, 5, cfg.splits) == 1


# ------------------------------------------------------------------------------------------------ learning


def test_losses_compare_the_first_output_with_the_standardised_target() -> None:
    torch.manual_seed(0)
    out = torch.randn(7, 1)
    y = torch.randn(7) * 12 + 40
    z = (y - 40.0) / 12.0
    f = torch.nn.functional
    assert torch.allclose(StandardisedLoss("mse", 40, 12)(out, y), f.mse_loss(out[:, 0], z))
    assert torch.allclose(StandardisedLoss("l1", 40, 12)(out, y), f.l1_loss(out[:, 0], z))
    huber = StandardisedLoss("huber", 40, 12, delta=0.5)
    assert torch.allclose(huber(out, y), f.huber_loss(out[:, 0], z, delta=0.5))
    assert torch.allclose(huber.elementwise(out, y), f.huber_loss(out[:, 0], z, delta=0.5, reduction="none"))
    # a perfect standardised output costs nothing
    assert float(StandardisedLoss("mse", 40, 12)(z[:, None], y)) == pytest.approx(0.0, abs=1e-12)


def test_metrics_match_scikit_learn_and_scipy() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(60, 12, 40)
    p = y + rng.normal(2, 5, 40)
    m = regression_metrics(torch.tensor(p), torch.tensor(y))
    assert m["n"] == 40
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p), abs=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)), abs=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, p), abs=1e-12)
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-12)
    one = regression_metrics([3.0], [5.0])
    assert one["mae"] == 2.0 and math.isnan(one["r2"]) and math.isnan(one["pearson_r"])
    flat = regression_metrics(np.full(5, 7.0), y[:5])
    assert math.isnan(flat["pearson_r"]) and flat["r2"] == pytest.approx(r2_score(y[:5], np.full(5, 7.0)))
    assert math.isnan(regression_metrics(p[:5], np.full(5, 2.0))["r2"])  # constant targets: undefined
    assert all(math.isnan(regression_metrics([], [])[k]) for k in ("mae", "rmse", "r2", "pearson_r"))


def test_weighted_metrics_equal_the_expanded_resamples() -> None:
    rng = np.random.default_rng(2)
    n = 23
    y = rng.normal(1000.0, 3.0, n)  # a large offset: the weighted formulas must not lose it to cancellation
    units = PatientRegression(
        np.asarray([f"p{i:02d}" for i in range(n)], dtype=object),
        y + rng.normal(0.5, 1.5, n),
        y,
        np.ones(n, dtype=int),
    )
    counts = cluster_resample_counts(units.patient_id, n_resamples=200, seed=5)
    reference = {
        "mae": lambda t, q: mean_absolute_error(t, q),
        "rmse": lambda t, q: math.sqrt(mean_squared_error(t, q)),
        "r2": lambda t, q: r2_score(t, q),
        "pearson_r": lambda t, q: stats.pearsonr(q, t)[0],
    }
    for name, ref in reference.items():
        got = units.weighted(name, counts)
        for row, value in zip(counts, got, strict=True):
            idx = np.repeat(np.arange(n), row)
            assert value == pytest.approx(ref(y[idx], units.pred[idx]), abs=1e-10), name
        assert units.metric(name) == pytest.approx(regression_metrics(units.pred, y)[name], abs=1e-10)
    # undefined resamples: one patient drawn, or every drawn patient with the same target
    single = np.zeros((1, n))
    single[0, 3] = 4
    assert math.isnan(units.weighted("r2", single)[0]) and math.isnan(units.weighted("pearson_r", single)[0])
    assert units.weighted("mae", single)[0] == pytest.approx(abs(units.pred[3] - y[3]))


def test_patient_units_average_scans_and_round_trip() -> None:
    units = PatientRegression.from_scans(["b", "a", "b", "c"], [1.0, 2.0, 5.0, 4.0], [2.0, 2.0, 4.0, 1.0])
    assert units.patient_id.tolist() == ["a", "b", "c"]
    assert units.pred.tolist() == [2.0, 3.0, 4.0] and units.target.tolist() == [2.0, 3.0, 1.0]
    assert units.n_scans.tolist() == [1, 2, 1] and units.strata is None
    back = RegressionTask.units_from_dict(json.loads(json.dumps(units.to_dict())))
    assert back.to_dict() == units.to_dict() and units.to_dict()["kind"] == "regression"
    other = PatientRegression.from_scans(["c", "a"], [0.0, 1.0], [1.0, 2.0])
    a, b = units.align(other)
    assert a.patient_id.tolist() == b.patient_id.tolist() == ["a", "c"] and a.same_units(b)


def _units(rng: np.random.Generator, y: np.ndarray, noise: float) -> PatientRegression:
    pid = np.asarray([f"p{i:02d}" for i in range(y.size)], dtype=object)
    return PatientRegression(pid, y + rng.normal(0, noise, y.size), y.copy(), np.ones(y.size, dtype=int))


def test_the_verdict_is_on_mae_lower_is_better_in_the_label_unit() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 60)
    runs = []
    for seed in range(3):
        for arm, noise in (("imagenet", 2.0), ("scratch", 8.0)):
            units = _units(rng, y, noise)
            curve = [
                {"epoch": e, "time_s": float(e), "val_mae": 10.0 / e + (0 if arm == "imagenet" else 3)}
                for e in (1, 2, 3, 4, 5, 6)
            ]
            runs.append(
                RunRecord(
                    arm,
                    seed,
                    1.0,
                    status="ok",
                    predictions=units,
                    test_metrics={"mae": units.metric("mae")},
                    curve=curve,
                )
            )
    results = CompareResults(
        [Arm("imagenet", "resnet18", "imagenet"), Arm("scratch", "resnet18")],
        runs,
        classes=["age"],
        seeds=[0, 1, 2],
        fractions=[1.0],
        primary_metric="mae",
        config={"regression": {"unit": "years"}},
        task="regression",
    )
    summary = summarize(results, n_resamples=300)
    row = summary.row("imagenet", 1.0)
    assert row.vs_reference.difference < 0 and row.vs_reference.significant
    assert row.sentence.startswith("imagenet beat scratch: MAE ") and " years lower (95% CI " in row.sentence
    assert summary.spec.label == "MAE (years)" and summary.to_dict()["unit"] == "years"
    # convergence: 2% of the worse (higher) plateau above it, reached from above
    conv = row.convergence
    seed0 = conv["per_seed"]["0"]
    assert seed0["tolerance"] == pytest.approx(0.02 * max(seed0["plateau"], seed0["reference_plateau"]))
    assert conv["n_reached"] == 3 and conv["median_epoch"] is not None
    assert summary.tolerance_text == "2% of the plateau"
    assert metric_spec("mae").tolerance_at(5.0) == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def disc_run(tmp_path_factory: pytest.TempPathFactory):
    """timm's tiny test_resnet, scratch, on 48 disc radiographs: 6 epochs of 4 steps of 8 images (32 x 32)."""
    from medtl.train import fine_tune

    root = tmp_path_factory.mktemp("regression")
    manifest = make_disc_task(root / "data")
    cfg = _config(
        manifest,
        root / "runs",
        model={"arch": "timm/test_resnet"},
        train={"epochs": 6, "batch_size": 8, "lr": 3e-3},
    )
    result = fine_tune(cfg, run_dir=root / "run", quiet=True)
    return result, manifest, root


def test_standardised_from_the_training_split_only(disc_run) -> None:
    from medtl.rundir import RunDir
    from medtl.train.experiment import prepare_experiment

    result, manifest, root = disc_run
    run = RunDir(result.run_dir)
    pre = run.read_preprocessing()
    splits = {r["patient_id"]: r["split"] for r in _read_csv(run.file("splits.csv"))}
    from medtl.utils import hash_patient_id

    rows = _read_csv(manifest)
    by_split: dict[str, list[float]] = {}
    for r in rows:
        by_split.setdefault(splits[hash_patient_id(r["patient_id"])], []).append(float(r["radius_mm"]))
    train = np.asarray(by_split["train"])
    everything = np.asarray([float(r["radius_mm"]) for r in rows])
    assert pre["task"] == "regression" and pre["unit"] == "mm" and pre["classes"] == ["radius_mm"]
    assert pre["target_mean"] == pytest.approx(train.mean(), abs=1e-9)
    assert pre["target_std"] == pytest.approx(train.std(), abs=1e-9)
    assert abs(pre["target_mean"] - everything.mean()) > 1e-6  # not the whole manifest's
    # the outputs are turned back into millimetres: output 0 is the training mean, output 1 one SD above it
    exp = prepare_experiment(
        _config(manifest, root / "x", model={"arch": "timm/test_resnet"}, splits={"file": str(run.file("splits.csv"))})
    )
    task = exp.task
    assert task.target_mean == pytest.approx(train.mean()) and task.target_std == pytest.approx(train.std())
    scores = task.outputs_to_scores(torch.tensor([[0.0], [1.0]]))
    assert scores[:, 0].tolist() == pytest.approx([train.mean(), train.mean() + train.std()], rel=1e-6)
    sample = exp.datasets["train"][0]
    record = exp.datasets["train"].records[sample["scan"]]
    assert sample["target"].dtype == torch.float32 and float(sample["target"]) == pytest.approx(record["target"])
    rebuilt = RegressionTask.from_state(exp.config, task.state(), exp.pipeline)
    assert (rebuilt.target_mean, rebuilt.target_std, rebuilt.unit) == (task.target_mean, task.target_std, "mm")


def test_trains_predicts_and_evaluates_in_the_label_unit(disc_run, tmp_path: Path) -> None:
    from medtl.train import evaluate, predict
    from medtl.train.scoring import describe_evaluation

    result, manifest, _ = disc_run
    targets = np.asarray([float(r["radius_mm"]) for r in _read_csv(manifest)])
    sd = float(targets.std())
    val = result.metrics["val"]
    # learnable: the disc's radius. Measured val MAE 0.45 mm, r 0.92 (SD of the targets 1.0 mm; 10 val scans)
    assert val["mae"] < 0.7 * sd and val["pearson_r"] > 0.7, val
    metrics = _read_csv(result.run_dir / "metrics.csv")
    assert list(metrics[0])[2:8] == ["train_loss", "val_loss", "val_mae", "val_rmse", "val_r2", "val_pearson_r"]
    test_rows = _read_csv(result.run_dir / "predictions_test.csv")
    assert list(test_rows[0]) == ["image", "patient_id", "label", "pred"]
    pred, true = (np.asarray([float(r[k]) for r in test_rows]) for k in ("pred", "label"))
    assert np.mean(np.abs(pred - true)) == pytest.approx(result.metrics["test"]["mae"], abs=1e-5)
    card = (result.run_dir / "model_card.md").read_text()
    assert "MAE (mm)" in card

    # predict new scans in millimetres, with and without their labels
    new = make_disc_task(tmp_path / "new", n_patients=12, seed=9, prefix="NEW")
    new_targets = np.asarray([float(r["radius_mm"]) for r in _read_csv(new)])
    out = tmp_path / "pred.csv"
    rows = predict(result.run_dir, [new], out=out)
    written = _read_csv(out)
    assert list(written[0]) == ["image", "patient_id", "label", "pred"] and len(rows) == 12
    got = np.asarray([float(r["pred"]) for r in written])
    # in millimetres, and better than the training targets' mean. Measured over four splits (pseudonym secrets): MAE
    # 0.30-0.65 of the mean's, r 0.86-0.94; a run can be off on all 12 new discs by half a millimetre, by its split
    # (so the SD of 12 new targets is no fixed yardstick)
    train_mean = json.loads((result.run_dir / "preprocessing.json").read_text())["target_mean"]
    assert np.mean(np.abs(got - new_targets)) < 0.8 * np.mean(np.abs(train_mean - new_targets))
    assert float(np.corrcoef(got, new_targets)[0, 1]) > 0.7
    plain = predict(result.run_dir, sorted((tmp_path / "new").glob("*.dcm"))[:3], out=tmp_path / "plain.csv")
    assert list(_read_csv(tmp_path / "plain.csv")[0]) == ["image", "patient_id", "pred"] and len(plain) == 3
    assert [r["pred"] for r in plain] == pytest.approx(got[:3].tolist(), abs=1e-6)

    # evaluate new patients: the metrics of those predictions, in mm
    ev = evaluate(result.run_dir, new)
    assert ev["task"] == "regression" and ev["unit"] == "mm" and ev["n"] == 12
    assert ev["mae"] == pytest.approx(float(np.mean(np.abs(got - new_targets))), abs=1e-5)
    assert ev["r2"] == pytest.approx(r2_score(new_targets, got), abs=1e-5)
    assert "(mae and rmse in mm)" in describe_evaluation(ev)[0]


def test_compare_imagenet_file_vs_scratch_on_mae(tmp_path: Path, torchvision_file) -> None:
    """2 arms x 2 seeds x 1 fraction x 2 epochs through the real engine: verdict, report, scatter plot, results."""
    from medtl.comparison.compare import compare

    make_disc_task(tmp_path / "data", n_patients=32)
    weights, _ = torchvision_file("mobilenet_v2")  # a pretrained file in torchvision's format
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "task: regression\n"
        "data: {manifest: data/manifest.csv, mode: 2d, label_column: radius_mm}\n"
        "regression: {unit: mm}\n"
        "splits: {val_fraction: 0.25, test_fraction: 0.25}\n"
        "preprocess: {size: [32, 32]}\n"
        "augment: {enabled: false}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 2, batch_size: 8, accelerator: cpu, threads: 1}\n"
        "compare:\n"
        "  arms:\n"
        f"    - {{name: imagenet, label: MobileNetV2 pretrained, model: {{weights: {weights}}}}}\n"
        "    - {name: scratch, label: MobileNetV2 scratch, model: {weights: scratch}}\n"
        "  seeds: 2\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert [r.status for r in res.results.runs] == ["ok"] * 4, [r.error for r in res.results.runs]
    assert res.summary.primary_metric == "mae" and res.summary.unit == "mm"
    sentence = res.summary.row("imagenet", 1.0).sentence
    assert " mm MAE (lower is better)" in sentence, sentence
    md = (out / "report.md").read_text()
    assert sentence in md and "Predicted vs true values" in md and "test MAE (mm) (mean)" in md
    assert (out / "plots" / "predicted_vs_true.png").stat().st_size > 1000
    rows = _read_csv(out / "results.csv")
    data = json.loads((out / "results.json").read_text())
    for r in data["runs"]:
        match = next(x for x in rows if (x["arm"], x["seed"]) == (r["arm"], str(r["seed"])))
        assert float(match["test_mae"]) == pytest.approx(r["test_metrics"]["mae"], rel=1e-5)
        # the comparison's per-patient MAE is the run's own test MAE (one scan per patient)
        run_result = json.loads((Path(r["run_dir"]) / "result.json").read_text())
        assert r["test_metrics"]["mae"] == pytest.approx(run_result["metrics"]["test"]["mae"], abs=1e-5)
        assert r["predictions"]["kind"] == "regression"
