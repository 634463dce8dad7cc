"""The compare driver with a stand-in training engine: fairness of splits, skipping, failures, Ctrl-C."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.compare import FakeEngine, write_manifest

import medtl.train
from medtl.comparison.compare import ComparisonChangedError, compare, default_arms, load_compare_config, run_dir_for
from medtl.errors import ConfigError


@pytest.fixture
def setup(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "data")
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 3}\n"
        "compare:\n"
        "  arms:\n"
        "    - {name: imagenet, model: {weights: imagenet}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  seeds: 2\n"
        "  fractions: [0.5, 1.0]\n"
        "  n_resamples: 200\n"
    )
    engine = FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", engine)
    return cfg, manifest, engine


def test_same_patients_per_seed_and_fraction_and_resume(setup, tmp_path):
    cfg, _, engine = setup
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert len(engine.calls) == 8
    assert (out / "splits.csv").is_file()
    for seed in (0, 1):
        for f in (0.5, 1.0):
            assert engine.train_patients[("imagenet", seed, f)] == engine.train_patients[("scratch", seed, f)]
        assert set(engine.train_patients[("imagenet", seed, 0.5)]) < set(engine.train_patients[("imagenet", seed, 1.0)])
    row = res.summary.row("imagenet", 1.0)
    assert row.vs_reference is not None and row.vs_reference.n_patients > 0
    assert res.results.arm("imagenet").load_report == "loaded imagenet"
    for name in ("report.md", "report.html", "results.csv", "results.json"):
        assert (out / name).is_file()
    # run again: nothing is retrained
    compare(cfg, out_dir=out)
    assert len(engine.calls) == 8
    # a different epoch budget is a different experiment: refused, nothing touched, unless asked to replace
    with pytest.raises(ComparisonChangedError, match=r"train\.epochs: 3 -> 2"):
        compare(cfg, out_dir=out, overrides={"train.epochs": 2}, fractions=[1.0], seeds=1)
    assert len(engine.calls) == 8 and not (out / "superseded").exists()
    compare(cfg, out_dir=out, overrides={"train.epochs": 2}, fractions=[1.0], seeds=1, replace=True)
    assert len(engine.calls) == 10
    (old,) = (out / "superseded").iterdir()
    # only the changed runs moved; the runs outside this plan stay where they were
    assert sorted(p.relative_to(old).as_posix() for p in old.glob("runs/*/*")) == [
        "runs/imagenet/frac1-seed0",
        "runs/scratch/frac1-seed0",
    ]
    assert (out / "runs" / "imagenet" / "frac0.5-seed1" / "result.json").is_file()


def test_failed_run_is_recorded_and_others_go_on(setup, tmp_path):
    cfg, _, engine = setup
    text = cfg.read_text().replace(
        "    - {name: scratch", "    - {name: custom, model: {weights: broken.pth}}\n    - {name: scratch"
    )
    cfg.write_text(text)
    res = compare(cfg, out_dir=tmp_path / "cmp", seeds=1, fractions=[1.0])
    failed = [r for r in res.results.runs if r.status == "failed"]
    assert len(failed) == 1 and "corrupt" in failed[0].error
    assert sum(r.ok for r in res.results.runs) == 2
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "Failed runs" in md and "corrupt" in md


def test_interrupt_keeps_finished_runs(setup, tmp_path, monkeypatch):
    cfg, _, _ = setup
    engine = FakeEngine(interrupt_at=3)
    monkeypatch.setattr(medtl.train, "fine_tune", engine)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        compare(cfg, out_dir=out)
    data = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in data["runs"]] == ["ok", "ok"]
    assert (out / "report.md").is_file()
    engine2 = FakeEngine()
    monkeypatch.setattr(medtl.train, "fine_tune", engine2)
    compare(cfg, out_dir=out)
    assert len(engine2.calls) == 6  # the two finished runs were reused


def test_config_errors(setup, tmp_path):
    cfg, _, _ = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("  seeds: 2", "  seed: 2"))
    with pytest.raises(ConfigError, match="compare.seed: unknown field"):
        load_compare_config(bad)
    with pytest.raises(ConfigError, match="unknown arm"):
        compare(cfg, out_dir=tmp_path / "x", arms=["imagenet", "medicalnet"])
    with pytest.raises(ConfigError, match="reference arm"):
        compare(cfg, out_dir=tmp_path / "x", arms=["imagenet"])


def test_default_arms_fit_the_architecture(setup):
    cfg, _, _ = setup
    c = load_compare_config(cfg)
    names = [a.name for a in default_arms(c.experiment)]
    # radiographs: ImageNet for model.arch, then the X-ray and general zoo sources with their own architectures
    assert names[0] == "imagenet" and "litemedsam" in names and "medicalnet" not in names and names[-1] == "scratch"
    c3 = load_compare_config(cfg, {"model.arch": "resnet18_3d", "data.mode": "3d", "data.modality": "CT"})
    names3 = [a.name for a in default_arms(c3.experiment)]
    assert names3[-1] == "scratch" and "medicalnet" in names3 and "imagenet" not in names3
    assert run_dir_for(Path("/c"), "imagenet", 1, 0.25) == Path("/c/runs/imagenet/frac0.25-seed1")


def test_end_to_end_with_the_real_engine(tmp_path, monkeypatch):
    """2 arms x 2 seeds x 2 fractions x 1 epoch through medtl.train.fine_tune, then every output file."""
    import torch
    import torchvision

    from medtl.comparison.report import fmt

    torch.manual_seed(0)
    write_manifest(tmp_path / "data", n_patients=24, size=32)
    ckpt = tmp_path / "mnv2_init.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), ckpt)  # a "pretrained" file, torchvision format
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "splits: {val_fraction: 0.25, test_fraction: 0.35}\n"
        "preprocess: {size: [16, 16]}\n"
        "augment: {enabled: false}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 1, batch_size: 8, accelerator: cpu, cache: disk}\n"
        "compare:\n"
        "  arms:\n"
        f"    - {{name: fromfile, label: MobileNetV2 from file, model: {{weights: {ckpt}}}}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  seeds: 2\n"
        "  fractions: [0.5, 1.0]\n"
        "  n_resamples: 200\n"
    )
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert [r.status for r in res.results.runs] == ["ok"] * 8, [r.error for r in res.results.runs]
    # the share of training patients actually used: all of them at 100%, at least the asked half at 50%
    assert all(r.fraction_used == 1.0 for r in res.results.runs if r.fraction == 1.0)
    assert all(0.5 <= r.fraction_used < 1.0 for r in res.results.runs if r.fraction == 0.5)
    for name in ("report.md", "report.html", "results.csv", "results.json", "splits.csv", "plots/roc.png"):
        assert (out / name).is_file(), name
    for r in res.results.runs:
        run = Path(r.run_dir)
        assert (run / "metrics.csv").is_file() and (run / "predictions_test.csv").is_file()
    data = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for row in data["summary"]["rows"]:
        mean = row["metrics"]["auroc"]["mean"]
        assert fmt(mean) in md and fmt(mean) in html
        d = row["vs_reference"]
        if d is not None:
            assert f"{d['difference']:+.3f}" in md
            assert row["sentence"] in md
    # per-run test AUROC in results.csv equals the one in results.json
    with open(out / "results.csv") as fh:
        by_key = {(r["arm"], r["seed"], r["fraction"]): r for r in csv.DictReader(fh)}
    for r in data["runs"]:
        assert float(by_key[(r["arm"], str(r["seed"]), str(r["fraction"]))]["test_auroc"]) == pytest.approx(
            r["test_metrics"]["auroc"], abs=1e-5
        )
    # every run trained on the patients its seed and fraction say, the same for both arms
    used = {}
    for r in res.results.runs:
        with open(Path(r.run_dir) / "splits.csv") as fh:
            rows = list(csv.DictReader(fh))
        used[(r.arm, r.seed, r.fraction)] = sorted(
            x["patient_id"] for x in rows if x["split"] == "train" and x.get("used", "1") == "1"
        )
        assert {x["split"] for x in rows} == {"train", "val", "test"}
    for seed in (0, 1):
        for f in (0.5, 1.0):
            assert used[("fromfile", seed, f)] == used[("scratch", seed, f)]
