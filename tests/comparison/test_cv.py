"""Cross-validation: ``medtl cv`` (every fold a run, the mean over folds with its intervals, reuse and refusals) and
``compare.repeat: folds | both`` (runs paired by fold on one test set, intervals corrected for overlapping training
sets). The stand-in engine keeps these fast; the real engine runs in the tests marked slow."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.compare import write_manifest
from helpers.cv import FoldEngine
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

import medtl.train
from medtl.comparison.compare import ComparisonChangedError, compare, run_dir_for
from medtl.comparison.cv import cross_validate
from medtl.comparison.stats import paired_difference
from medtl.data.splits import read_splits_csv
from medtl.errors import ConfigError


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _config(manifest: Path, out: Path, **extra) -> dict:
    cfg = {
        "data": {"manifest": str(manifest), "mode": "2d"},
        "splits": {"seed": 0, "test_fraction": 0.2},
        "model": {"arch": "mobilenet_v2", "weights": "scratch"},
        "train": {"epochs": 2},
        "output": {"dir": str(out)},
    }
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


@pytest.fixture
def engine(monkeypatch) -> FoldEngine:
    fake = FoldEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", fake)
    return fake


def _check_folds(split_files: list[Path], everyone: set[str]) -> None:
    """One test set for every fold; validation folds disjoint and covering every other patient; each fold trains on
    the rest."""
    splits = [read_splits_csv(p) for p in split_files]
    test = {p for p, s in splits[0].items() if s == "test"}
    assert test and all({p for p, s in a.items() if s == "test"} == test for a in splits)
    vals = [{p for p, s in a.items() if s == "val"} for a in splits]
    assert all(v for v in vals) and sum(len(v) for v in vals) == len(set().union(*vals))  # disjoint
    assert set().union(*vals) == everyone - test
    for a, v in zip(splits, vals, strict=True):
        assert {p for p, s in a.items() if s == "train"} == everyone - test - v


def test_cv_trains_every_fold_and_reports_the_mean_over_folds(engine, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", n_patients=30)
    cfg = _config(manifest, tmp_path / "runs")
    report = cross_validate(cfg, folds=3, out_dir=tmp_path / "cv")
    cv = tmp_path / "cv"
    assert sorted(f for _, _, f in engine.calls) == [0, 1, 2]
    everyone = set(read_splits_csv(cv / "splits_fold0.csv"))
    assert len(everyone) == 30
    _check_folds([cv / f"splits_fold{j}.csv" for j in range(3)], everyone)
    # each fold's run trained from its own split file, as its config says
    for j in range(3):
        assert (cv / f"fold{j}" / "predictions_val.csv").is_file()
    assert [f.fold for f in report.folds] == [0, 1, 2] and all(f.ok for f in report.folds)
    # the validation metric of a fold, recomputed from its predictions (one scan per patient)
    for f in report.folds:
        rows = _csv(cv / f"fold{f.fold}" / "predictions_val.csv")
        y = [int(r["label"] == "positive") for r in rows]
        assert f.val["auroc"] == pytest.approx(roc_auc_score(y, [float(r["prob_positive"]) for r in rows]))
        assert f.n_val_patients == len(rows)
    # the report's mean is the mean of the fold values, in every file
    auroc = report.metrics["auroc"]
    values = [f.val["auroc"] for f in report.folds]
    assert auroc["val"]["mean"] == pytest.approx(np.mean(values)) and auroc["val"]["per_fold"] == values
    table = _csv(cv / "cv_results.csv")
    assert [int(r["fold"]) for r in table] == [0, 1, 2]
    assert np.mean([float(r["val_auroc"]) for r in table]) == pytest.approx(auroc["val"]["mean"], abs=1e-5)
    data = json.loads((cv / "cv_results.json").read_text())
    assert data["metrics"]["auroc"]["val"]["mean"] == pytest.approx(auroc["val"]["mean"])
    assert data["folds"] == 3 and data["fold_ratio"] == pytest.approx(0.5)
    # the intervals: t over folds, and Nadeau-Bengio's, wider by sqrt((1/k + 1/(k-1)) / (1/k))
    half_t = (auroc["val"]["t"]["high"] - auroc["val"]["t"]["low"]) / 2
    sd = float(np.std(values, ddof=1))
    tcrit = float(sps.t.ppf(0.975, 2))
    if auroc["val"]["t"]["high"] < 1 and auroc["val"]["t"]["low"] > 0:  # not clipped to the metric's range
        assert half_t == pytest.approx(tcrit * sd / math.sqrt(3))
    corrected = auroc["val"]["corrected"]
    assert corrected["low"] <= auroc["val"]["t"]["low"] and corrected["high"] >= auroc["val"]["t"]["high"]
    # test: the same test patients for every fold, the mean of each fold's model on them
    assert auroc["test"]["mean"] == pytest.approx(np.mean([f.test["auroc"] for f in report.folds]))
    assert auroc["test"]["n_patients"] == report.folds[0].n_test_patients == 6
    assert auroc["test"]["low"] <= auroc["test"]["mean"] <= auroc["test"]["high"]
    md = (cv / "cv_report.md").read_text()
    assert "Nadeau" in md and f"{auroc['val']['mean']:.3f}" in md
    html = (cv / "cv_report.html").read_text()
    assert html.count("<tr>") == 1 + len(report.metrics) + 1 + 3  # the summary and the folds tables
    assert any("AUROC: validation folds" in line for line in report.lines())

    # again: every fold is reused, nothing trains
    engine.calls.clear()
    again = cross_validate(cfg, folds=3, out_dir=cv)
    assert engine.calls == [] and again.metrics["auroc"]["val"]["mean"] == pytest.approx(auroc["val"]["mean"])
    # a finished fold would change: refused, naming the change, nothing trained or written
    before = (cv / "cv_results.json").read_bytes()
    with pytest.raises(ComparisonChangedError, match=r"train.epochs: 2 -> 3"):
        cross_validate(cfg, folds=3, out_dir=cv, overrides={"train.epochs": 3})
    assert engine.calls == [] and (cv / "cv_results.json").read_bytes() == before


def test_cv_refuses_what_fixes_one_split_for_every_fold(engine, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", n_patients=12)
    with pytest.raises(ConfigError, match="number of folds"):
        cross_validate(_config(manifest, tmp_path / "runs"), out_dir=tmp_path / "a")
    rows = _csv(manifest)
    with_split = tmp_path / "data" / "with_split.csv"
    with open(with_split, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0], "split"])
        w.writeheader()
        w.writerows({**r, "split": ["train", "val", "test"][i % 3]} for i, r in enumerate(rows))
    with pytest.raises(ConfigError, match="split column"):
        cross_validate(_config(with_split, tmp_path / "runs"), folds=3, out_dir=tmp_path / "b")
    splits = tmp_path / "splits.csv"
    splits.write_text("patient_id,split\n")
    with pytest.raises(ConfigError, match="splits.file"):
        cross_validate(
            _config(manifest, tmp_path / "runs", splits={"file": str(splits)}), folds=3, out_dir=tmp_path / "c"
        )
    assert engine.calls == []


def _compare_yaml(manifest: Path, repeat: str, seeds: int = 1) -> str:
    return (
        f"data: {{manifest: {manifest}, mode: 2d}}\n"
        "splits: {folds: 3, test_fraction: 0.25}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 2}\n"
        "compare:\n"
        "  arms:\n"
        "    - {name: imagenet, model: {weights: imagenet}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        f"  repeat: {repeat}\n"
        f"  seeds: {seeds}\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )


def test_compare_over_folds_pairs_runs_by_fold_and_corrects_the_interval(engine, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", n_patients=60)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(_compare_yaml(manifest, "folds", seeds=3))
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    runs = res.results.runs
    assert [r.status for r in runs] == ["ok"] * 6 and res.results.folds == [0, 1, 2]
    # one run per arm and fold, seed 0 (compare.seeds is not used by folds alone)
    assert sorted(engine.calls) == sorted((w, 0, j) for w in ("imagenet", "scratch") for j in range(3))
    for r in runs:
        assert Path(r.run_dir) == run_dir_for(out, r.arm, 0, 1.0, r.fold) and r.run_dir.endswith(f"-fold{r.fold}")
    assert not (out / "splits.csv").exists()
    everyone = set(read_splits_csv(out / "splits_fold0.csv"))
    _check_folds([out / f"splits_fold{j}.csv" for j in range(3)], everyone)
    assert json.loads((out / "splits.json").read_text())["repeat"] == "folds"
    # paired by fold, the interval corrected: se^2 = seed_sd^2 (1/k + 1/(k-1)) + shared
    row = res.summary.row("imagenet", 1.0)
    d = row.vs_reference
    assert d.n_seeds == 3 and d.fold_ratio == pytest.approx(0.5) and "Nadeau" in d.method
    assert d.seed_sd > 0  # the folds differ (on a few test patients they can also agree exactly: test_stats.py)
    assert d.se**2 == pytest.approx(d.seed_sd**2 * (1 / 3 + 1 / 2) + d.shared_patient_se**2, rel=1e-9)
    by_fold = {(r.arm, r.fold): r.predictions for r in runs}
    again = paired_difference(
        [by_fold[("imagenet", j)] for j in range(3)],
        [by_fold[("scratch", j)] for j in range(3)],
        "auroc",
        n_resamples=200,
        fold_ratio=0.5,
    )
    assert again.difference == pytest.approx(d.difference) and again.high == pytest.approx(d.high)
    naive = paired_difference(
        [by_fold[("imagenet", j)] for j in range(3)],
        [by_fold[("scratch", j)] for j in range(3)],
        "auroc",
        n_resamples=200,
    )
    assert d.high - d.low > naive.high - naive.low
    assert "3 folds" in row.sentence
    # the files say so
    table = _csv(out / "results.csv")
    assert sorted(int(r["fold"]) for r in table) == [0, 0, 1, 1, 2, 2]
    md = (out / "report.md").read_text()
    assert "3 cross-validation folds" in md and "Nadeau and Bengio" in md
    power = next(line for line in md.splitlines() if line.startswith("Power:"))
    assert "3 folds per arm" in power and "seeds per arm" not in power and "add seeds" not in power
    assert json.loads((out / "results.json").read_text())["folds"] == [0, 1, 2]
    # again: reused; another kind of repetition: refused, naming it
    engine.calls.clear()
    compare(cfg, out_dir=out)
    assert engine.calls == []
    cfg.write_text(_compare_yaml(manifest, "seeds", seeds=3))
    with pytest.raises(ComparisonChangedError, match="compare.repeat"):
        compare(cfg, out_dir=out)
    assert engine.calls == []


def test_compare_over_seeds_and_folds(engine, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", n_patients=36)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(_compare_yaml(manifest, "both", seeds=2))
    res = compare(cfg, out_dir=tmp_path / "cmp")
    assert len(res.results.runs) == 12 and all(r.ok for r in res.results.runs)
    assert {(r.seed, r.fold) for r in res.results.runs} == {(s, j) for s in (0, 1) for j in range(3)}
    d = res.summary.row("imagenet", 1.0).vs_reference
    assert d.n_seeds == 6 and d.fold_ratio == pytest.approx(0.5)
    assert "6 runs (seeds x folds)" in res.summary.row("imagenet", 1.0).sentence


def test_compare_over_folds_needs_folds(engine, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "data", n_patients=12)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(_compare_yaml(manifest, "folds").replace("splits: {folds: 3, test_fraction: 0.25}\n", ""))
    with pytest.raises(ConfigError, match="splits.folds"):
        compare(cfg, out_dir=tmp_path / "cmp")
    assert engine.calls == [] and not (tmp_path / "cmp" / "runs").exists()


# ------------------------------------------------------------------------------------------ real engine


@pytest.mark.slow  # three one-epoch runs (about a minute on 2 shared cores)
def test_cv_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.tasks import base_config, make_xray_task

    from medtl.cli import main

    (tmp_path / "data").mkdir()
    manifest = make_xray_task(tmp_path / "data", n_patients=24)
    cfg = base_config(manifest, tmp_path / "runs", preprocess={"size": [32, 32]}, train={"epochs": 1, "batch_size": 8})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["cv", str(path), "--folds", "3", "--out", str(tmp_path / "cv")]) == 0
    out = capsys.readouterr().out
    assert "AUROC: validation folds" in out and "report:" in out
    cv = tmp_path / "cv"
    # the folds' own run folders say which patients each validated on: disjoint, one test set
    runs = [_csv(cv / f"fold{j}" / "splits.csv") for j in range(3)]
    everyone = {r["patient_id"] for r in runs[0]}
    _check_folds([cv / f"fold{j}" / "splits.csv" for j in range(3)], everyone)
    for j in range(3):
        assert yaml.safe_load((cv / f"fold{j}" / "config.yaml").read_text())["splits"]["fold"] == j
    data = json.loads((cv / "cv_results.json").read_text())
    table = _csv(cv / "cv_results.csv")
    assert [r["status"] for r in table] == ["ok"] * 3
    mean = data["metrics"]["auroc"]["val"]["mean"]
    assert mean == pytest.approx(np.mean([float(r["val_auroc"]) for r in table]), abs=1e-5)
    assert f"{mean:.3f}" in (cv / "cv_report.html").read_text()


@pytest.mark.slow  # six one-epoch runs (about two minutes on 2 shared cores)
def test_compare_over_folds_end_to_end(tmp_path: Path) -> None:
    import torch
    import torchvision

    write_manifest(tmp_path / "data", n_patients=24, size=32)
    ckpt = tmp_path / "mnv2_init.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), ckpt)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "splits: {folds: 3, test_fraction: 0.25}\n"
        "preprocess: {size: [16, 16]}\n"
        "augment: {enabled: false}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 1, batch_size: 8, accelerator: cpu}\n"
        "compare:\n"
        "  arms:\n"
        f"    - {{name: fromfile, model: {{weights: {ckpt}}}}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  repeat: folds\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert [r.status for r in res.results.runs] == ["ok"] * 6, [r.error for r in res.results.runs]
    # every fold's model was tested on the same patients, and validated on its own fold
    tests = {
        frozenset(r["patient_id"] for r in _csv(Path(x.run_dir) / "predictions_test.csv")) for x in res.results.runs
    }
    assert len(tests) == 1
    vals = {
        (x.arm, x.fold): {r["patient_id"] for r in _csv(Path(x.run_dir) / "predictions_val.csv")}
        for x in res.results.runs
    }
    for arm in ("fromfile", "scratch"):
        assert not (vals[(arm, 0)] & vals[(arm, 1)]) and not (vals[(arm, 1)] & vals[(arm, 2)])
        assert [vals[(arm, j)] for j in range(3)] == [vals[("scratch", j)] for j in range(3)]
    d = res.summary.row("fromfile", 1.0).vs_reference
    assert d.n_seeds == 3 and d.fold_ratio == pytest.approx(0.5)
    assert "Nadeau and Bengio" in (out / "report.html").read_text()
