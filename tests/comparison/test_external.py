"""External validation: ``evaluate``'s patient-bootstrap intervals (overall and per site) and its self-contained
report, and a comparison's verdict repeated on another manifest (``medtl evaluate COMPARE_DIR manifest.csv``).

Stand-in runs keep the fast tests fast (a network that reads the image's brightness; a stand-in training engine and
evaluation for the comparison); the real engine runs in the tests marked slow."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.compare import FakeEngine, write_manifest
from helpers.tasks import make_xray_task
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import medtl.train
import medtl.train.scoring
from medtl.cli import main
from medtl.comparison.compare import compare
from medtl.comparison.external import check_report_dir, evaluate_comparison, external_dir, write_evaluation_report
from medtl.comparison.patients import aggregate_by_patient
from medtl.comparison.stats import cluster_resample_counts, paired_difference
from medtl.config import load_config
from medtl.errors import ConfigError, MedtlError
from medtl.rundir import RunDir
from medtl.tasks.classification import ClassificationTask
from medtl.train.predict import LoadedRun
from medtl.train.scoring import describe_evaluation, evaluate_rows
from medtl.transforms.presets import build_pipeline
from medtl.transforms.record import InputRecord
from medtl.utils import hash_patient_id
from medtl.weights.sources import Normalization

CLASSES = ["negative", "positive"]


def external_manifest(root: Path, n_patients: int = 16, seed: int = 5, size: int = 16) -> Path:
    """make_xray_task's radiographs under new patient IDs (EX...), the first half from site A, the rest from B."""
    root.mkdir(parents=True, exist_ok=True)
    path = make_xray_task(root, n_patients=n_patients, seed=seed, size=size)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        r["patient_id"] = "EX" + r["patient_id"]
        r["site"] = "A" if i < n_patients // 2 else "B"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


class Brightness(torch.nn.Module):
    """A stand-in network that looks at the top-left quarter of the image: a positive's bright disc raises the upper
    percentile each radiograph is scaled by, so the rest of it looks darker. Informative, not perfect (the disc is
    sometimes in that quarter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quarter = x[..., : x.shape[-2] // 2, : x.shape[-1] // 2]
        s = (0.42 - quarter.mean(dim=tuple(range(1, x.ndim)))) * 20
        return torch.stack([-s, s], 1)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedRun, Path]:
    """A classification run folder with nothing but the stand-in network, and an external manifest with sites."""
    root = tmp_path_factory.mktemp("external")
    manifest = external_manifest(root / "data")
    cfg = load_config(
        {
            "data": {"manifest": str(manifest)},
            "model": {"arch": "resnet18"},
            "preprocess": {"size": [16, 16]},
            "augment": {"enabled": False},
        }
    )
    record = InputRecord.of(modality="XR", mode="2d", scan_dims=2, in_channels=1, normalization=Normalization("none"))
    run = root / "run"
    run.mkdir()
    task = ClassificationTask(list(CLASSES))
    loaded = LoadedRun(RunDir(run), cfg, task, build_pipeline(cfg, record), Brightness().eval(), {}, run / "best.ckpt")
    return loaded, manifest


def _units_of(scans: list[dict], site: str | None = None):
    rows = [r for r in scans if site is None or r["site"] == site]
    return aggregate_by_patient(
        [r["patient_id"] for r in rows],
        [CLASSES.index(r["label"]) for r in rows],
        [[r["prob_negative"], r["prob_positive"]] for r in rows],
    )


def test_intervals_are_a_patient_bootstrap_of_the_units_compare_makes(stand_in) -> None:
    loaded, manifest = stand_in
    res = evaluate_rows(loaded, manifest, device="cpu")
    assert res["n"] == 16 and res["n_patients"] == 16 and 0.6 < res["auroc"] < 1.0  # the network is informative
    # the units: each patient's scans averaged, as compare's aggregate_by_patient does
    units = ClassificationTask.units_from_dict(res["units"])
    scans = [dict(r, site=rec["site"]) for r, rec in zip(res["scans"], _records(manifest), strict=True)]
    expected = _units_of(scans)
    assert list(units.patient_id) == list(expected.patient_id)
    np.testing.assert_allclose(units.probs, expected.probs, atol=1e-6)
    # the interval, recomputed from its definition: patients drawn within their class, the metric on each expanded
    # resample (AUROC as Mann-Whitney's U from ranks, ties counted one half)
    counts = cluster_resample_counts(units.patient_id, strata=units.labels, n_resamples=2000, seed=0)
    aurocs, accs = [], []
    for row in counts:
        idx = np.repeat(np.arange(len(units)), row)
        y, p = units.labels[idx], units.probs[idx, 1]
        ranks = rankdata(p)
        n1, n0 = int(y.sum()), int((1 - y).sum())
        aurocs.append((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
        accs.append(float(np.mean(units.probs[idx].argmax(1) == y)))
    assert res["ci"]["auroc"] == pytest.approx(list(np.quantile(aurocs, [0.025, 0.975])), abs=1e-9)
    assert res["ci"]["accuracy"] == pytest.approx(list(np.quantile(accs, [0.025, 0.975])), abs=1e-9)
    assert res["patient_metrics"]["auroc"] == pytest.approx(roc_auc_score(units.labels, units.probs[:, 1]))
    for m, (low, high) in res["ci"].items():
        assert low <= res["patient_metrics"][m] + 1e-12 and res["patient_metrics"][m] <= high + 1e-12, m
    assert res["ci"]["auroc"][1] - res["ci"]["auroc"][0] > 0.05  # 16 patients: a real interval
    # per site: each site's patients only, with their own interval
    assert set(res["sites"]) == {"A", "B"}
    for site in ("A", "B"):
        values = res["sites"][site]
        site_units = _units_of(scans, site)
        assert values["n_patients"] == 8 and values["n"] == 8
        auc = roc_auc_score(site_units.labels, site_units.probs[:, 1])
        assert values["patient_metrics"]["auroc"] == pytest.approx(auc)
        low, high = values["ci"]["auroc"]
        assert low <= auc <= high
    lines = describe_evaluation(res)
    low, high = res["ci"]["auroc"]
    assert any(
        f"AUROC {res['patient_metrics']['auroc']:.3f} (95% CI {low:.3f} to {high:.3f})" in line for line in lines
    )
    assert any(line.startswith("  site A (8 patient(s), 8 scan(s)): AUROC") for line in lines)


def _records(manifest: Path) -> list[dict]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_manifest_without_sites_has_no_site_table(stand_in, tmp_path: Path) -> None:
    loaded, manifest = stand_in
    rows = _records(manifest)
    plain = tmp_path / "plain.csv"
    with open(plain, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "patient_id"], extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "image": str(manifest.parent / r["image"])} for r in rows)
    res = evaluate_rows(loaded, plain, device="cpu")
    assert "sites" not in res and res["ci"]["auroc"][0] <= res["patient_metrics"]["auroc"]


def test_the_report_is_one_self_contained_page(stand_in, tmp_path: Path) -> None:
    loaded, manifest = stand_in
    res = evaluate_rows(loaded, manifest, device="cpu")
    html_path = write_evaluation_report(res, loaded.run.path, manifest, tmp_path / "report")
    html = html_path.read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # ROC, reliability, CM
    assert "<script" not in html and "<link" not in html and "url(" not in html
    assert "By site" in html and ">A</td>" in html and ">B</td>" in html
    low, high = res["ci"]["auroc"]
    assert f"{low:.3f} to {high:.3f}" in html
    md = (tmp_path / "report" / "report.md").read_text()
    for name in ("roc", "reliability", "confusion"):
        assert f"(plots/{name}.png)" in md and (tmp_path / "report" / "plots" / f"{name}.png").is_file()
    saved = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert saved["ci"]["auroc"] == pytest.approx([low, high])


def test_a_report_folder_in_the_run_or_over_a_file_is_refused(stand_in, tmp_path: Path) -> None:
    loaded, manifest = stand_in
    with pytest.raises(MedtlError, match="run folder"):
        check_report_dir(loaded.run.path / "report", manifest, loaded.run.path)
    afile = tmp_path / "taken"
    afile.write_text("x")
    with pytest.raises(MedtlError, match="is a file"):
        check_report_dir(afile, manifest, loaded.run.path)
    check_report_dir(tmp_path / "fine", manifest, loaded.run.path)


# ------------------------------------------------------------------------------------------ segmentation


def test_segmentation_evaluate_gives_per_patient_dice_intervals(tmp_path: Path) -> None:
    """The stand-in segmentation run of tests/segmentation/test_seg_evaluate.py: per-patient units (PatientValues),
    each metric's interval over the patients."""
    from segmentation.test_seg_evaluate import _loaded_run, _scans

    from medtl.train.scoring import evaluate_segmentation

    manifest = _scans(tmp_path)
    res = evaluate_segmentation(_loaded_run(tmp_path), manifest, allow_seen=True, device="cpu")
    assert res["units"]["kind"] == "segmentation" and res["n_patients"] == 2
    # per patient: P1 (1 + 2/3) / 2, P2 1; the interval over those two patients
    assert res["patient_metrics"]["dice"] == pytest.approx((5 / 6 + 1) / 2)
    low, high = res["ci"]["dice"]
    assert low == pytest.approx(5 / 6) and high == pytest.approx(1.0)
    assert set(res["ci"]) >= {"dice", "hd95", "surface_dice", "dice_box"}


# ------------------------------------------------------------------------------------------ comparisons


def _fake_evaluate(run_dir, manifest, *, allow_seen=False, grid="native", **_):
    """Stands in for medtl.train.scoring.evaluate on a comparison's run: per-patient probabilities of the external
    patients, separated well by pretrained arms and poorly by scratch, with the run's own noise."""
    from medtl.data import Manifest

    records = Manifest.from_csv(manifest).to_dicts()
    run = Path(run_dir)
    arm = run.parent.name
    # the noise depends on the run (arm and seed), not on where pytest put the comparison
    rng = np.random.default_rng([int(hashlib.sha256(f"{arm}/{run.name}".encode()).hexdigest()[:8], 16)])
    strength = 2.5 if arm != "scratch" else 0.0
    labels = np.asarray([r["label"] for r in records])
    p = 1 / (1 + np.exp(-(strength * (2 * labels - 1) + rng.normal(size=labels.size))))
    units = aggregate_by_patient([r["patient_id"] for r in records], labels, p)
    return {"units": units.to_dict(), "n_patients": len(units), "task": "classification"}


@pytest.fixture
def fake_comparison(tmp_path: Path, monkeypatch) -> Path:
    manifest = write_manifest(tmp_path / "data", n_patients=30)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        f"data: {{manifest: {manifest}, mode: 2d}}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 3}\n"
        "compare:\n"
        "  arms:\n"
        "    - {name: imagenet, model: {weights: imagenet}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  seeds: 3\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )
    monkeypatch.setattr(medtl.train, "fine_tune", FakeEngine())
    compare(cfg, out_dir=tmp_path / "cmp")
    monkeypatch.setattr(medtl.train.scoring, "evaluate", _fake_evaluate)
    return tmp_path / "cmp"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not str(p.relative_to(folder)).startswith("external-")
    }


def test_a_comparison_repeats_its_verdict_on_external_patients(fake_comparison: Path, tmp_path: Path) -> None:
    cmp = fake_comparison
    ext_manifest = write_manifest(tmp_path / "elsewhere" / "hospital_b", n_patients=40)
    before = _digests(cmp)
    ext = evaluate_comparison(cmp, ext_manifest)
    out = cmp / "external-hospital_b"  # named after the manifest's folder (its file is manifest.csv)
    assert ext.out_dir == out
    for name in ("external_report.html", "external_report.md", "results_external.json", "results_external.csv"):
        assert (out / name).is_file(), name
    assert _digests(cmp) == before  # nothing of the comparison's own was touched
    # the verdict: compare's paired difference on the external units, seed by seed
    data = json.loads((out / "results_external.json").read_text())
    runs = {(r["arm"], r["seed"]): ClassificationTask.units_from_dict(r["predictions"]) for r in data["runs"]}
    d = paired_difference(
        [runs[("imagenet", s)] for s in range(3)], [runs[("scratch", s)] for s in range(3)], "auroc", n_resamples=200
    )
    row = ext.summary.row("imagenet", 1.0)
    assert row.vs_reference.n_patients == 40 and row.vs_reference.difference == pytest.approx(d.difference)
    assert (row.vs_reference.low, row.vs_reference.high) == pytest.approx((d.low, d.high))
    assert row.metrics["auroc"].n == 3 and data["external"]["n_patients"] == 40
    assert "imagenet beat scratch" in row.sentence and "3 seeds, 40 test patients" in row.sentence
    html = (out / "external_report.html").read_text()
    assert "Verdict on the external patients" in html and "own verdict" in html
    assert ext.original and all(sentence in html for sentence in ext.original + ext.sentences())
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))
    with open(out / "results_external.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_where_an_external_evaluation_may_write(fake_comparison: Path, tmp_path: Path, capsys) -> None:
    cmp = fake_comparison.resolve()
    manifest = tmp_path / "other.csv"
    assert external_dir(cmp, manifest) == cmp / "external-other"
    assert external_dir(cmp, manifest, cmp / "external-mine") == cmp / "external-mine"
    assert external_dir(cmp, manifest, tmp_path / "anywhere") == (tmp_path / "anywhere").resolve()
    for bad in (cmp, cmp / "mine", cmp / "runs" / "external-x", cmp / "external-a" / "b"):
        with pytest.raises(ConfigError, match="external-<name>"):
            external_dir(cmp, manifest, bad)
    with pytest.raises(ConfigError, match="not a comparison folder"):
        evaluate_comparison(tmp_path, manifest)
    # through the command: one line, nothing written
    ext_manifest = write_manifest(tmp_path / "b", n_patients=10)
    capsys.readouterr()
    assert main(["evaluate", str(cmp), str(ext_manifest), "--out", str(cmp / "plots")]) == 2
    err = capsys.readouterr().err
    assert "external-<name>" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(cmp.glob("external-*"))


# ------------------------------------------------------------------------------------------ real engine


@pytest.mark.slow  # one one-epoch run and three evaluations (about a minute on 2 shared cores)
def test_evaluate_command_end_to_end(tmp_path: Path, capsys) -> None:
    from helpers.tasks import base_config

    from medtl.train import fine_tune

    (tmp_path / "data").mkdir()
    manifest = make_xray_task(tmp_path / "data", n_patients=24, size=32)
    cfg = base_config(manifest, tmp_path / "runs", preprocess={"size": [32, 32]}, train={"epochs": 1})
    run = fine_tune(cfg, quiet=True).run_dir
    ext = external_manifest(tmp_path / "ext", size=32)
    capsys.readouterr()
    assert main(["evaluate", str(run), str(ext), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"AUROC \d\.\d{3} \(95% CI \d\.\d{3} to \d\.\d{3}\)", out)
    assert "site A (8 patient(s), 8 scan(s))" in out and "site B" in out and "report:" in out
    html = (tmp_path / "rep" / "report.html").read_text()
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))
    assert "By site" in html and "The run evaluated" in html and "resnet18" in html
    saved = json.loads((tmp_path / "rep" / "evaluation.json").read_text())
    for m, (low, high) in saved["ci"].items():
        if low is not None:
            assert low <= saved["patient_metrics"][m] <= high, m
    # the run's own patients: refused; scored apart with --allow-seen, counted apart in the report
    assert main(["evaluate", str(run), str(manifest)]) == 2
    assert main(["evaluate", str(run), str(manifest), "--allow-seen", "--report", str(tmp_path / "seen")]) == 0
    html = (tmp_path / "seen" / "report.html").read_text()
    assert "Patients the run saw (not in the metrics above)" in html
    saved = json.loads((tmp_path / "seen" / "evaluation.json").read_text())
    test_patients = {r["patient_id"] for r in saved["scans"] if r["split"] == "test"}
    assert saved["n_patients"] == len(test_patients) == 6


@pytest.mark.slow  # six one-epoch runs, then six evaluations (about two minutes on 2 shared cores)
def test_evaluate_a_comparison_end_to_end(tmp_path: Path, capsys) -> None:
    import torchvision

    write_manifest(tmp_path / "data", n_patients=24, size=32)
    ckpt = tmp_path / "mnv2_init.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), ckpt)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(
        "data: {manifest: data/manifest.csv, mode: 2d}\n"
        "splits: {val_fraction: 0.25, test_fraction: 0.25}\n"
        "preprocess: {size: [16, 16]}\n"
        "augment: {enabled: false}\n"
        "model: {arch: mobilenet_v2}\n"
        "train: {epochs: 1, batch_size: 8, accelerator: cpu}\n"
        "compare:\n"
        "  arms:\n"
        f"    - {{name: fromfile, model: {{weights: {ckpt}}}}}\n"
        "    - {name: scratch, model: {weights: scratch}}\n"
        "  seeds: 3\n"
        "  fractions: [1.0]\n"
        "  n_resamples: 200\n"
    )
    res = compare(cfg, out_dir=tmp_path / "cmp")
    assert all(r.ok for r in res.results.runs), [r.error for r in res.results.runs]
    cmp = tmp_path / "cmp"
    before = _digests(cmp)
    ext = _other_hospital(tmp_path / "hospital_b", n_patients=20, size=32)
    capsys.readouterr()
    assert main(["evaluate", str(cmp), str(ext)]) == 0
    assert "verdict on the external patients:" in capsys.readouterr().out
    out = cmp / "external-hospital_b"
    data = json.loads((out / "results_external.json").read_text())
    assert data["external"]["n_patients"] == 20 and len(data["runs"]) == 6
    assert all(r["status"] == "ok" and len(r["predictions"]["patient_id"]) == 20 for r in data["runs"])
    assert _digests(cmp) == before
    row = next(r for r in data["summary"]["rows"] if r["arm"] == "fromfile")
    assert row["vs_reference"]["n_patients"] == 20 and row["vs_reference"]["n_seeds"] == 3
    assert row["sentence"] and row["sentence"] in (out / "external_report.html").read_text().replace("&#x27;", "'")
    assert hash_patient_id("B-P000") in data["runs"][0]["predictions"]["patient_id"]
    # the comparison's own manifest: the runs trained and validated on those patients, refused
    assert main(["evaluate", str(cmp), str(tmp_path / "data" / "manifest.csv")]) == 2
    assert "--allow-seen" in capsys.readouterr().err


def _other_hospital(root: Path, n_patients: int, size: int) -> Path:
    """helpers.compare.write_manifest's kind of images (secondary captures, a bright square in positives), drawn
    anew for other patients (B-P000...)."""
    from helpers.dicom import write_radiograph
    from pydicom.uid import SecondaryCaptureImageStorage

    root.mkdir(parents=True)
    rows = []
    for i in range(n_patients):
        img = np.random.default_rng(1000 + i).integers(0, 200, (size, size)).astype(np.uint16)
        if i % 2:
            img[size // 4 : size // 2, size // 4 : size // 2] += 800
        pid = f"B-P{i:03d}"
        write_radiograph(root / f"b{i}.dcm", img, pid, sop_class=SecondaryCaptureImageStorage, pixel_spacing=None)
        rows.append({"image": f"b{i}.dcm", "label": CLASSES[i % 2], "patient_id": pid})
    with open(root / "hospital_b.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    return root / "hospital_b.csv"
