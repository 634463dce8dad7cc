"""Calibration and saliency in a comparison, on hand-made runs (no training): ``compare.secondary_metrics`` gets the
primary metric's paired difference and interval per metric, Brier and ECE can be the primary metric, and the report
shows each arm's reliability diagram and its saliency maps of the same test patients side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medtl.comparison.compare_config import load_compare_config
from medtl.comparison.report import write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import METRICS, aggregate_by_patient, compute_metric, paired_difference
from medtl.comparison.summary import summarize
from medtl.errors import ConfigError

N_PATIENTS = 40


def _results(tmp_path: Path | None = None, *, secondary=("brier", "ece"), primary="auroc") -> CompareResults:
    """Two arms, 3 seeds, one label fraction: 'pretrained' separates the classes with calibrated probabilities,
    'scratch' separates them less and is over-confident (logits six times too large)."""
    rng = np.random.default_rng(5)
    pids = [f"{i:04x}" for i in range(N_PATIENTS)]
    y = np.arange(N_PATIENTS) % 2
    arms = [Arm("pretrained", "resnet18", "imagenet", "fine_tune", "2d"), Arm("scratch", "resnet18", "scratch")]
    runs = []
    for arm in arms:
        for seed in range(3):
            z = (2.0 if arm.name == "pretrained" else 0.5) * (2 * y - 1) + rng.normal(0, 1, N_PATIENTS)
            p = 1 / (1 + np.exp(-(z if arm.name == "pretrained" else 6 * z)))
            units = aggregate_by_patient(pids, y, p)
            run_dir = None
            if tmp_path is not None:  # the saliency maps each run drew of the first test patients
                folder = tmp_path / "runs" / f"{arm.name}-{seed}" / "saliency"
                folder.mkdir(parents=True)
                for k, name in enumerate(("img_001", "img_004", "img_007")):
                    _png(folder / f"{name}_saliency.png", k + seed)
                run_dir = str(folder.parent)
            runs.append(
                RunRecord(
                    arm.name,
                    seed,
                    1.0,
                    "ok",
                    run_dir=run_dir,
                    test_metrics={m: compute_metric(m, units.labels, units.probs) for m in METRICS},
                    predictions=units,
                    curve=[{"epoch": 1, "time_s": 1.0, f"val_{primary}": 0.5}],
                )
            )
    compare = {"secondary_metrics": list(secondary), "primary_metric": primary}
    return CompareResults(
        arms, runs, ["negative", "positive"], [0, 1, 2], [1.0], primary_metric=primary, config={"compare": compare}
    )


def _png(path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.imsave(path, np.random.default_rng(k).random((16, 16)), cmap="jet")


def test_secondary_metrics_get_the_primary_metrics_paired_difference() -> None:
    res = _results()
    s = summarize(res, n_resamples=300)
    row = s.row("pretrained", 1.0)
    assert set(row.secondary) == {"brier", "ece"} and s.row("scratch", 1.0).secondary == {}
    a = [r.predictions for r in res.runs if r.arm == "pretrained"]
    b = [r.predictions for r in res.runs if r.arm == "scratch"]
    for name in ("brier", "ece"):
        d = row.secondary[name]
        direct = paired_difference(a, b, name, n_resamples=300)
        assert d.difference == pytest.approx(direct.difference) and d.low == pytest.approx(direct.low)
        per_seed = [
            compute_metric(name, x.labels, x.probs) - compute_metric(name, z.labels, z.probs)
            for x, z in zip(a, b, strict=True)
        ]
        assert d.difference == pytest.approx(np.mean(per_seed), abs=1e-12)
    # the calibrated arm has the lower Brier score, clearly
    assert row.secondary["brier"].high < 0
    assert json.loads(json.dumps(s.to_dict()))["rows"][0]["secondary"]["brier"]["metric"] == "brier"


def test_the_report_shows_secondary_metrics_reliability_and_where_the_models_look(tmp_path: Path) -> None:
    res = _results(tmp_path)
    files = write_report(res, tmp_path / "cmp", n_resamples=200)
    md = files.report_md.read_text()
    assert "## Secondary metrics (paired difference vs scratch)" in md
    table = md.split("## Secondary metrics")[1].split("\n\n")[1]
    assert "Brier score (lower is better)" in table and "ECE (lower is better)" in table
    # reliability: one diagram per arm, side by side
    assert "Reliability diagrams" in md and (tmp_path / "cmp" / "plots" / "reliability.png").is_file()
    # saliency: the first run's maps of each arm copied, and drawn as one grid
    assert "## Where the models look" in md
    for arm in ("pretrained", "scratch"):
        copied = sorted(p.name for p in (tmp_path / "cmp" / "saliency" / arm).iterdir())
        assert copied == ["img_001_saliency.png", "img_004_saliency.png", "img_007_saliency.png"]
    assert (tmp_path / "cmp" / "plots" / "saliency.png").is_file()
    html = files.report_html.read_text()
    assert html.count("data:image/png;base64") >= 4


def test_no_saliency_section_without_maps(tmp_path: Path) -> None:
    md = write_report(_results(), tmp_path / "cmp", n_resamples=100).report_md.read_text()
    assert "Where the models look" not in md


def test_brier_as_the_primary_metric_is_lower_is_better() -> None:
    res = _results(primary="brier", secondary=())
    s = summarize(res, n_resamples=300)
    sentence = s.row("pretrained", 1.0).sentence
    assert sentence.startswith("pretrained beat scratch: Brier score") and "lower" in sentence


def test_compare_config_checks_the_secondary_metrics(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label\na.dcm,x\n")
    raw = {"data": {"manifest": str(manifest)}, "model": {"arch": "resnet18"}}
    cfg = load_compare_config(raw | {"compare": {"secondary_metrics": ["brier", "ece"], "primary_metric": "brier"}})
    assert cfg.compare.secondary_metrics == ["brier", "ece"] and cfg.experiment.train.monitor == "val_brier"
    with pytest.raises(ConfigError, match="compare.secondary_metrics 'dice' is a segmentation metric"):
        load_compare_config(raw | {"compare": {"secondary_metrics": ["dice"]}})
