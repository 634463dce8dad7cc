"""``medtl compare`` on segmentation: Dice and HD95 verdicts, per-patient values, overlays, metric checks.

Most tests use the stand-in engine of tests/helpers/compare.py (FakeSegEngine), which writes the files a
segmentation run writes; the last one trains two tiny arms on the sample CT phantoms.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.compare import FakeSegEngine, seg_compare_yaml, write_manifest, write_seg_manifest

import medtl.train
from medtl.comparison.compare import compare, load_compare_config
from medtl.comparison.patient_values import PatientValues, aggregate_scan_rows
from medtl.comparison.results import CompareResults
from medtl.comparison.stats import paired_difference
from medtl.errors import ConfigError

ARMS = (
    "    - {name: pretrained, model: {weights: imagenet-inflated}}\n    - {name: scratch, model: {weights: scratch}}\n"
)
ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _by_patient(rows: list[dict[str, str]], column: str) -> dict[str, float]:
    """Independent of medtl: per patient, the mean over scans of one per-scan column, NaN left out."""
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["patient_id"], []).append(float(r[column]))
    return {p: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for p, v in out.items()}


def _setup(tmp_path, monkeypatch, engine, *, primary=None, scans_per_patient=1, seeds=3):
    manifest = write_seg_manifest(tmp_path / "data", n_patients=24, scans_per_patient=scans_per_patient)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(seg_compare_yaml(manifest, arms=ARMS, primary=primary, seeds=seeds))
    monkeypatch.setattr(medtl.train, "fine_tune", engine)
    return cfg


def test_dice_is_the_default_and_the_better_arm_beats_scratch(tmp_path, monkeypatch):
    engine = FakeSegEngine({"imagenet-inflated": (0.85, 3.0), "scratch": (0.60, 8.0)})
    cfg = _setup(tmp_path, monkeypatch, engine)
    assert load_compare_config(cfg).compare.primary_metric == "dice"
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert res.results.task == "segmentation" and len(engine.calls) == 6
    row = res.summary.row("pretrained", 1.0)
    d = row.vs_reference
    assert d.metric == "dice" and d.n_seeds == 3 and d.n_patients == len(res.results.runs[0].predictions)
    assert 0.2 < d.difference < 0.3 and d.low > 0 and d.delong is None
    assert row.sentence.startswith(f"pretrained beat scratch by {d.difference:.3f} Dice (95% CI {d.low:.3f} to ")
    # each run's Dice is the mean over patients, recomputed here from its predictions_test.csv
    for rec in res.results.runs:
        per_patient = _by_patient(_rows(Path(rec.run_dir) / "predictions_test.csv"), "dice")
        assert rec.test_metrics["dice"] == pytest.approx(np.mean(list(per_patient.values())), abs=1e-9)
    md = (out / "report.md").read_text()
    assert "test Dice (mean)" in md and row.sentence in md
    # DeLong's column says n/a, not an empty cell
    header, *_ = [line for line in md.splitlines() if line.startswith("| arm | labels | runs |")]
    pretrained_line = next(line for line in md.splitlines() if line.startswith("| pretrained | 100% |"))
    delong_col = header.split(" | ").index("p DeLong (seed-averaged scores)")
    assert pretrained_line.split(" | ")[delong_col] == "n/a"
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {"test_dice", "test_hd95", "test_surface_dice", "test_dice_nodule", "hd95_patients_left_out"} <= set(
        table[0]
    )
    assert "test_auroc" not in table[0]
    data = json.loads((out / "results.json").read_text())
    assert data["task"] == "segmentation" and data["summary"]["primary_metric"] == "dice"
    # results.json holds the per-patient values: read back, they give the same numbers
    again = CompareResults.from_dict(data)
    assert again.task == "segmentation"
    for rec, back in zip(res.results.runs, again.runs, strict=True):
        assert isinstance(back.predictions, PatientValues)
        assert back.predictions.metric("hd95") == pytest.approx(rec.test_metrics["hd95"], abs=1e-12)
        np.testing.assert_array_equal(back.predictions.n_scans, rec.predictions.n_scans)


@pytest.mark.parametrize("better", ["imagenet-inflated", "scratch"])
def test_hd95_lower_is_better_and_the_verdict_says_so(tmp_path, monkeypatch, better):
    worse = "scratch" if better == "imagenet-inflated" else "imagenet-inflated"
    # the same Dice for both arms: the verdict can come only from HD95 and its direction
    engine = FakeSegEngine({better: (0.7, 3.0), worse: (0.7, 7.0)})
    cfg = _setup(tmp_path, monkeypatch, engine, primary="hd95")
    c = load_compare_config(cfg)
    assert c.experiment.train.monitor == "val_hd95"  # minimised by the trainer
    res = compare(cfg, out_dir=tmp_path / "cmp")
    row = res.summary.row("pretrained", 1.0)
    d = row.vs_reference
    assert d.metric == "hd95"
    if better == "imagenet-inflated":
        assert d.difference < -3.5 and d.high < 0
        assert row.sentence.startswith(f"pretrained beat scratch: HD95 {abs(d.difference):.2f} mm lower (95% CI ")
    else:
        assert d.difference > 3.5 and d.low > 0
        assert row.sentence.startswith(f"pretrained did worse than scratch: HD95 {d.difference:.2f} mm higher")
    assert "mm" in row.sentence
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "test HD95 (mm) (mean)" in md and "difference vs scratch (mm)" in md and "hd95 (mm)" in md
    # convergence of a lower-is-better metric: the target is the higher plateau plus 1 mm, crossed from above
    conv = row.convergence
    assert conv["higher_is_better"] is False and conv["tolerance"] == 1.0
    seed0 = conv["per_seed"]["0"]
    assert seed0["target"] == pytest.approx(max(seed0["plateau"], seed0["reference_plateau"]) + 1.0)


def test_several_scans_per_patient_are_averaged_per_patient(tmp_path, monkeypatch):
    engine = FakeSegEngine({"imagenet-inflated": (0.8, 3.0), "scratch": (0.7, 5.0)})
    cfg = _setup(tmp_path, monkeypatch, engine, scans_per_patient=3, seeds=1)
    res = compare(cfg, out_dir=tmp_path / "cmp")
    rec = res.results.run("pretrained", 0, 1.0)
    rows = _rows(Path(rec.run_dir) / "predictions_test.csv")
    n_patients = len({r["patient_id"] for r in rows})
    assert len(rows) == 3 * n_patients
    preds = rec.predictions
    assert len(preds) == n_patients and set(preds.n_scans.tolist()) == {3}
    for metric in ("dice_lung", "hd95_nodule", "surface_dice_lung"):
        per_patient = _by_patient(rows, metric)
        assert rec.test_metrics[metric] == pytest.approx(np.mean(list(per_patient.values())), abs=1e-9)
    # the paired difference counts patients, not scans
    assert res.summary.row("pretrained", 1.0).vs_reference.n_patients == n_patients
    # one seed: a difference, but no interval and no verdict
    assert "no verdict" in res.summary.row("pretrained", 1.0).sentence


def test_a_patient_without_any_defined_hd95_is_left_out_and_reported(tmp_path, monkeypatch):
    engine = FakeSegEngine({"imagenet-inflated": (0.8, 3.0), "scratch": (0.6, 6.0)}, undefined={"scratch": 2})
    cfg = _setup(tmp_path, monkeypatch, engine, primary="hd95")
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    for rec in res.results.runs:
        rows = _rows(Path(rec.run_dir) / "predictions_test.csv")
        expected_left_out = 2 if rec.arm == "scratch" else 0
        assert rec.n_left_out("hd95") == expected_left_out
        per_class = []
        for c in ("lung", "nodule"):
            values = [v for v in _by_patient(rows, f"hd95_{c}").values() if np.isfinite(v)]
            per_class.append(np.mean(values))
        assert rec.test_metrics["hd95"] == pytest.approx(np.mean(per_class), abs=1e-9)
    d = res.summary.row("pretrained", 1.0).vs_reference
    assert np.isfinite(d.difference) and d.estimable and d.n_patients == len(res.results.runs[0].predictions)
    ref_row = res.summary.row("scratch", 1.0)
    assert ref_row.left_out["hd95"] == [2, 2, 2] and "hd95" not in res.summary.row("pretrained", 1.0).left_out
    md = (out / "report.md").read_text()
    assert "## Patients left out of HD95" in md and "| scratch | 100% | 2, 2, 2 |" in md
    assert any("were left out of HD95" in w for w in res.summary.warnings)
    with open(out / "results.csv") as fh:
        left = {(r["arm"], r["seed"]): r["hd95_patients_left_out"] for r in csv.DictReader(fh)}
    assert left[("scratch", "0")] == "2" and left[("pretrained", "0")] == "0"


def test_paired_difference_of_per_patient_values_matches_a_direct_computation():
    """One machinery for both tasks: the segmentation difference is the difference of the patient means."""
    cols = ["patient_id", "dice_a", "hd95_a", "surface_dice_a"]
    rng = np.random.default_rng(0)

    def run(shift):
        rows = []
        for p in range(30):
            h = "nan" if p == 0 else f"{5 + shift + rng.normal():.4f}"
            rows.append(dict(zip(cols, [f"P{p}", f"{0.7 + rng.normal(0, 0.05):.4f}", h, "0.5"], strict=True)))
        return rows

    a = [aggregate_scan_rows(run(-2)) for _ in range(3)]
    b = [aggregate_scan_rows(run(0)) for _ in range(3)]
    d = paired_difference(a, b, "hd95", n_resamples=300)
    direct = [np.nanmean(x.values["hd95"]) - np.nanmean(y.values["hd95"]) for x, y in zip(a, b, strict=True)]
    assert d.difference == pytest.approx(np.mean(direct), abs=1e-12)
    assert d.per_seed == pytest.approx(tuple(direct), abs=1e-12)
    assert d.n_patients == 30 and d.high < 0 and d.delong is None


def test_overlays_are_copied_and_shown_per_arm(tmp_path, monkeypatch):
    engine = FakeSegEngine({"imagenet-inflated": (0.8, 3.0), "scratch": (0.6, 6.0)}, overlays=2)
    cfg = _setup(tmp_path, monkeypatch, engine, seeds=2)
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Example overlays" in md
    for arm in ("pretrained", "scratch"):
        first = res.results.run(arm, 0, 1.0)  # seed 0: the first successful run at the largest fraction
        for name in ("scan0.png", "scan1.png"):
            copied = out / "overlays" / arm / name
            assert copied.read_bytes() == (Path(first.run_dir) / "overlays" / name).read_bytes()
            assert f"(overlays/{arm}/{name})" in md
            assert base64.b64encode(copied.read_bytes()).decode() in html
        assert res.results.overlays[arm] == [f"overlays/{arm}/scan0.png", f"overlays/{arm}/scan1.png"]
    # the seed-1 overlays are not the report's: they differ from seed 0's and are not copied
    seed1 = Path(res.results.run("scratch", 1, 1.0).run_dir) / "overlays" / "scan0.png"
    assert seed1.read_bytes() != (out / "overlays" / "scratch" / "scan0.png").read_bytes()


def test_a_metric_of_the_other_task_is_a_one_line_error(tmp_path, monkeypatch):
    cfg = _setup(tmp_path, monkeypatch, FakeSegEngine({}), primary="auroc")
    with pytest.raises(ConfigError) as err:
        load_compare_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "'auroc' is a classification and multilabel metric" in msg
    assert "dice, hd95, surface_dice" in msg
    cls_manifest = write_manifest(tmp_path / "cls")
    cls_cfg = tmp_path / "cls.yaml"
    cls_cfg.write_text(
        f"data: {{manifest: {cls_manifest}, mode: 2d}}\nmodel: {{arch: mobilenet_v2}}\n"
        "compare: {primary_metric: hd95}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_compare_config(cls_cfg)
    msg = str(err.value)
    assert "\n" not in msg and "'hd95' is a segmentation metric" in msg
    assert "auroc, accuracy, balanced_accuracy, f1" in msg
    assert load_compare_config(cls_cfg, {"compare.primary_metric": "f1"}).experiment.train.monitor == "val_f1"


@pytest.mark.slow
def test_end_to_end_on_the_sample_ct_phantoms(tmp_path):
    """Two tiny arms (a MedicalNet-format file and scratch) x 1 seed x 1 fraction x 1 epoch, real training."""
    import torch
    from monai.networks.nets import resnet as monai_resnet

    # 16 patients of the committed phantoms (8 with a nodule), paths made absolute
    rows = _rows(ROOT / "sample_data/ct_nifti_masks/manifest.csv")
    base = ROOT / "sample_data/ct_nifti_masks"
    picked = [r for lab in ("nodule", "no_nodule") for r in [x for x in rows if x["label"] == lab][:8]]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in picked:
            w.writerow(r | {"image": str((base / r["image"]).resolve()), "mask": str((base / r["mask"]).resolve())})
    # a checkpoint in MedicalNet's own format (no MedicalNet weights exist offline)
    torch.manual_seed(0)
    bias_downsample, shortcut = monai_resnet.get_medicalnet_pretrained_resnet_args(10)
    net = monai_resnet.resnet10(
        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=shortcut, bias_downsample=bias_downsample
    )
    ckpt = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        f"data: {{manifest: {manifest}, modality: CT, mode: 3d}}\n"
        "splits: {val_fraction: 0.25, test_fraction: 0.35}\n"
        "preprocess: {orientation: RAS, ct_window: [-1000, 400], spacing: [1.6, 1.6, 4.0]}\n"
        "segmentation: {classes: [background, lung, nodule], patch_size: [32, 32, 32], samples_per_scan: 1,"
        " decoder_channels: [16, 16, 16, 16, 16]}\n"
        "augment: {enabled: false}\n"
        "model: {arch: resnet10_3d, in_channels: 1}\n"
        "train: {epochs: 1, batch_size: 8, accelerator: cpu, precise_bn_batches: 0, loggers: [csv],"
        " limit_train_batches: 1}\n"
        "compare:\n"
        "  arms:\n"
        f"    - {{name: medicalnet-file, model: {{weights: {ckpt}}}}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  seeds: 1\n"
        "  fractions: [1.0]\n"
        "  primary_metric: hd95\n"
        "  n_resamples: 200\n"
    )
    out = tmp_path / "cmp"
    res = compare(cfg, out_dir=out)
    assert [r.status for r in res.results.runs] == ["ok", "ok"], [r.error for r in res.results.runs]
    data = json.loads((out / "results.json").read_text())
    assert data["task"] == "segmentation"
    for rec in res.results.runs:
        rows = _rows(Path(rec.run_dir) / "predictions_test.csv")
        assert rec.test_metrics["dice"] == pytest.approx(
            np.mean([np.mean([float(r["dice_lung"]), float(r["dice_nodule"])]) for r in rows]), abs=1e-5
        )
        assert 0.0 <= rec.test_metrics["dice"] <= 1.0 and "val_hd95" in rec.curve[0]
    # the MedicalNet-format file was read as such: wrapper and prefix removed, encoder tensors loaded
    loaded = res.results.arm("medicalnet-file").load_report
    assert "stripped prefix 'module.'" in loaded and "resnet_10.pth" in loaded, loaded
    assert "random initialisation" in res.results.arm("scratch").load_report
    d = res.summary.row("medicalnet-file", 1.0).vs_reference
    assert d is not None and d.metric == "hd95" and d.n_seeds == 1
    md = (out / "report.md").read_text()
    assert "test HD95 (mm) (mean)" in md and "no verdict" in md
    html = (out / "report.html").read_text()
    for rec in res.results.runs:  # each run drew overlays of test scans; the report shows its own copies
        pngs = sorted((Path(rec.run_dir) / "overlays").glob("*.png"))
        assert pngs
        for png in pngs:
            assert f"(overlays/{rec.arm}/{png.name})" in md
            assert (out / "overlays" / rec.arm / png.name).read_bytes() == png.read_bytes()
            assert base64.b64encode(png.read_bytes()).decode() in html


def test_the_shipped_segmentation_comparison_config_loads():
    c = load_compare_config(ROOT / "configs/compare_seg_ct.yaml")
    assert c.experiment.segmentation.classes == ["background", "lung", "nodule"]
    assert c.compare.primary_metric == "dice" and c.experiment.train.monitor == "val_dice"
    assert [a.model.weights for a in c.compare.arms] == ["imagenet-inflated", "scratch"]
    assert Path(c.experiment.data.manifest).is_file()
    hd95 = load_compare_config(ROOT / "configs/compare_seg_ct.yaml", {"compare.primary_metric": "hd95"})
    assert hd95.compare.primary_metric == "hd95"
