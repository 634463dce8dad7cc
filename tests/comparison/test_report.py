"""The report and its statistics, on hand-made runs (no training)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtl.comparison.report import md_escape, print_summary, summary_table, write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord, record_from_run_dir
from medtl.comparison.stats import METRICS, aggregate_by_patient, compute_metric
from medtl.comparison.summary import summarize


def smoothed(values, window=3):
    """Trailing mean, written out independently of medtl.comparison.stats.smooth_scores."""
    return [float(np.mean(values[max(0, i - window + 1) : i + 1])) for i in range(len(values))]


def make_results(strength: dict[str, float], *, n_patients: int = 40, seeds=(0, 1, 2), fractions=(0.5, 1.0)):
    rng = np.random.default_rng(11)
    pids = [f"{i:04x}" for i in range(n_patients)]
    y = np.arange(n_patients) % 2
    arms = [
        Arm(
            "imagenet",
            "mobilenet_v2",
            "imagenet",
            "fine_tune",
            "2d",
            label="MobileNetV2 ImageNet",
            provenance={
                "license": "BSD-3-Clause",
                "citation": "torchvision",
                "sha256": "b0353104",
                "description": "pretrained here on 300 unlabeled scans (40 patients) with SimCLR for 4 epochs",
            },
            load_report="matched 314 tensors, head left random",
        ),
        Arm("scratch", "mobilenet_v2", "scratch", "one_cycle", "2d", label="scratch"),
    ]
    runs = []
    for arm in arms:
        for s in seeds:
            for f in fractions:
                w = strength[arm.name] * f
                p = 1 / (1 + np.exp(-(w * (2 * y - 1) + rng.normal(0, 1, n_patients))))
                preds = aggregate_by_patient(pids, y, p)
                curve = [{"epoch": e, "time_s": 2.0 * e, "val_auroc": min(1.0, 0.5 + w * e / 8)} for e in (1, 2, 3)]
                runs.append(
                    RunRecord(
                        arm.name,
                        s,
                        f,
                        "ok",
                        None,
                        f"/runs/{arm.name}-{s}-{f}",
                        6.0,
                        3,
                        20,
                        {m: compute_metric(m, preds.labels, preds.probs) for m in METRICS},
                        preds,
                        curve,
                    )
                )
    return CompareResults(arms, runs, ["negative", "positive"], list(seeds), list(fractions))


def test_summary_matches_direct_computation():
    res = make_results({"imagenet": 3.0, "scratch": 0.3})
    s = summarize(res, n_resamples=300)
    row = s.row("imagenet", 1.0)
    aucs = [r.test_metrics["auroc"] for r in res.runs if r.arm == "imagenet" and r.fraction == 1.0]
    assert row.metrics["auroc"].mean == pytest.approx(np.mean(aucs))
    ref = [r for r in res.runs if r.arm == "scratch" and r.fraction == 1.0]
    arm = [r for r in res.runs if r.arm == "imagenet" and r.fraction == 1.0]
    direct = np.mean(
        [
            roc_auc_score(a.predictions.labels, a.predictions.scores)
            - roc_auc_score(b.predictions.labels, b.predictions.scores)
            for a, b in zip(arm, ref, strict=True)
        ]
    )
    assert row.vs_reference.difference == pytest.approx(direct)
    assert row.vs_reference.low > 0 and row.vs_reference.n_seeds == 3
    assert row.sentence.startswith("MobileNetV2 ImageNet beat scratch by ")
    assert "with all the labels" in row.sentence and "3 seeds, 40 test patients" in row.sentence
    # convergence: both curves smoothed over 3 epochs; the target is the lower plateau (scratch's) - 0.02
    imagenet = smoothed([min(1.0, 0.5 + 3.0 * e / 8) for e in (1, 2, 3)])
    scratch = smoothed([0.5 + 0.3 * e / 8 for e in (1, 2, 3)])
    target = min(imagenet[-1], scratch[-1]) - 0.02
    assert target == pytest.approx(0.575 - 0.02)
    first = [next(e for e, v in zip((1, 2, 3), c, strict=True) if v >= target) for c in (imagenet, scratch)]
    assert first == [1, 2]
    c = row.convergence
    assert (c["n_reached"], c["n_reference_reached"], c["n"]) == (3, 3, 3)
    assert (c["median_epoch"], c["reference_median_epoch"]) == (1, 2)
    assert (c["median_seconds"], c["reference_median_seconds"]) == (2.0, 4.0)


def test_identical_arms_converge_alike_and_are_not_estimable():
    res = make_results({"imagenet": 1.0, "scratch": 1.0})
    for r in res.runs:  # imagenet's runs become exact copies of scratch's
        if r.arm == "imagenet":
            twin = res.run("scratch", r.seed, r.fraction)
            r.predictions, r.curve, r.test_metrics = twin.predictions, twin.curve, twin.test_metrics
    s = summarize(res, n_resamples=100)
    row = s.row("imagenet", 1.0)
    c = row.convergence
    assert c["median_epoch"] == c["reference_median_epoch"] and c["n_reached"] == c["n_reference_reached"] == 3
    for seed in c["per_seed"].values():
        assert seed["epoch"] == seed["reference_epoch"]
    d = row.vs_reference
    assert d.difference == 0 and not d.estimable and not d.significant
    assert "not estimable" in row.sentence and "beat" not in row.sentence
    _, rows = summary_table(res, s)
    assert rows[0][6] == "not estimable" and rows[0][10] == "not estimable"  # CI and DeLong


@pytest.mark.parametrize("n_seeds", [1, 2])
def test_fewer_than_three_seeds_give_no_verdict(n_seeds):
    res = make_results({"imagenet": 3.0, "scratch": 0.3}, seeds=tuple(range(n_seeds)))
    s = summarize(res, n_resamples=200)
    for f in (0.5, 1.0):
        row = s.row("imagenet", f)
        assert row.vs_reference.difference > 0.1  # a large difference ...
        assert "beat" not in row.sentence and "did worse" not in row.sentence  # ... and still no verdict
        assert "training noise cannot be separated from an effect" in row.sentence
        assert "at least 3 seeds per arm" in row.sentence
    if n_seeds == 2:
        row = s.row("imagenet", 1.0)
        assert row.vs_reference.estimable and "seeds per arm to be resolved" in row.sentence


def test_no_difference_is_said_honestly():
    res = make_results({"imagenet": 1.0, "scratch": 1.0})
    s = summarize(res, n_resamples=300)
    for f in (0.5, 1.0):
        row = s.row("imagenet", f)
        if row.vs_reference.low <= 0 <= row.vs_reference.high:
            assert "did not beat scratch" in row.sentence and "no significant difference" in row.sentence
    assert any("did not beat" in s.row("imagenet", f).sentence for f in (0.5, 1.0))


def test_report_files_and_numbers_agree(tmp_path):
    res = make_results({"imagenet": 3.0, "scratch": 0.5})
    res.runs.append(RunRecord("scratch", 2, 1.0, "failed", "TrainingError: out of memory", "/runs/x"))
    files = write_report(res, tmp_path, n_resamples=200)
    for p in (files.report_md, files.report_html, files.results_json, files.results_csv, *files.plots.values()):
        assert p.is_file() and p.stat().st_size > 0
    assert set(files.plots) == {"label_efficiency", "learning_curves", "roc", "reliability"}
    html = files.report_html.read_text()
    assert html.count("data:image/png;base64,") == 4 and 'src="plots/' not in html
    md = files.report_md.read_text()
    assert "pretrained here on 300 unlabeled scans" in md  # where the arm's weights come from
    data = json.loads(files.results_json.read_text())
    for row in data["summary"]["rows"]:
        assert row["sentence"] in md
        auc = row["metrics"]["auroc"]
        assert f"{auc['mean']:.3f}" in md
        if row["vs_reference"]:
            d = row["vs_reference"]
            assert f"{d['difference']:+.3f}" in md and f"{d['low']:.3f} to {d['high']:.3f}" in md
    assert "out of memory" in md and "BSD-3-Clause" in md and "head left random" in md
    # the weights table: the loaded file's hash for the pretrained arm, none for scratch (it loads no file)
    arms = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if "| mobilenet\\_v2 |" in line}
    assert arms["MobileNetV2 ImageNet"].endswith("| b0353104 |")
    assert arms["scratch"].endswith("| n/a |") and "unverified" not in arms["scratch"]
    with open(files.results_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res.runs)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed[0]["error"] == "TrainingError: out of memory"
    # results.json round-trips and re-summarises to the same numbers
    again = summarize(CompareResults.from_dict(data), n_resamples=200)
    assert again.to_dict()["rows"][0]["metrics"] == data["summary"]["rows"][0]["metrics"]
    # the table in report.md is the one summary_table produces (escaped for Markdown)
    header, table = summary_table(res, res.summary)
    for r in table:
        assert ("| " + " | ".join(md_escape(c, block=False) for c in r) + " |") in md
    # both components of the difference's uncertainty are printed
    d = res.summary.row("imagenet", 1.0).vs_reference
    assert f"{d.seed_sd:.3f}" in md and f"{d.patient_se:.3f}" in md and "seed SD" in md and "patient SE" in md
    assert "Power: with 40 test patients and 3 seeds per arm" in md


def test_terminal_table(capsys):
    from rich.console import Console

    res = make_results({"imagenet": 3.0, "scratch": 0.5})
    res.arms[0].label = "[red]MobileNetV2[/red] ImageNet"  # printed as written, not as rich markup
    s = summarize(res, n_resamples=100)
    console = Console(width=250, force_terminal=False)
    print_summary(res, s, console)
    out = capsys.readouterr().out
    assert "[red]MobileNetV2[/red] ImageNet" in out and s.row("imagenet", 1.0).sentence[:40] in out


def test_user_text_is_escaped_in_markdown_as_in_html(tmp_path):
    res = make_results({"imagenet": 3.0, "scratch": 0.5}, fractions=(1.0,))
    res.arms[0].label = "a|b <script>alert(1)</script> $\\frac{$"  # the last part is invalid mathtext
    res.classes = ["no_finding", "*effusion*"]
    res.runs.append(RunRecord("scratch", 9, 1.0, "failed", "bad | value\n# not a heading", "/runs/x"))
    files = write_report(res, tmp_path, n_resamples=100)
    assert set(files.plots) == {"label_efficiency", "learning_curves", "roc", "reliability"}
    md, html = files.report_md.read_text(), files.report_html.read_text()
    assert "<script>" not in md and "<script>" not in html
    assert "a\\|b &lt;script&gt;alert(1)&lt;/script&gt; \\$\\\\frac{\\$" in md
    assert "a|b &lt;script&gt;alert(1)&lt;/script&gt; $\\frac{$" in html
    assert "no\\_finding, \\*effusion\\*" in md
    assert "bad \\| value # not a heading" in md and "\n# not a heading" not in md
    # every table row still has as many cells as its header
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            widths = {len(re.split(r"(?<!\\)\|", ln)) for ln in lines}
            assert len(widths) == 1, lines


def test_label_fraction_actually_used_is_reported():
    res = make_results({"imagenet": 3.0, "scratch": 0.3}, fractions=(0.1, 1.0))
    for r in res.runs:
        r.fraction_used = 1 / 6 if r.fraction == 0.1 else 1.0
    s = summarize(res, n_resamples=100)
    row = s.row("imagenet", 0.1)
    assert row.fraction_used == pytest.approx(1 / 6)
    assert "with 10% of the labels (16.7% actually used)" in row.sentence
    assert "actually used" not in s.row("imagenet", 1.0).sentence
    _, rows = summary_table(res, s)
    assert rows[0][1] == "10% (16.7% used)" and rows[-1][1] == "100%"
    assert s.to_dict()["rows"][0]["fraction_used"] == pytest.approx(1 / 6)


def test_record_from_run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"status": "ok", "seconds": 12.5, "best_epoch": 2}))
    (run / "metrics.csv").write_text(
        "epoch,time_s,train_loss,val_loss,val_auroc\n1,5.0,0.7,0.69,0.6\n2,10.1,0.6,0.6,0.8\n"
    )
    (run / "splits.csv").write_text("patient_id,split,label\na,train,0\nb,train,1\nc,test,0\nd,test,1\n")
    (run / "predictions_test.csv").write_text(
        "image,patient_id,label,prob_negative,prob_positive\n"
        "x1,c,negative,0.8,0.2\nx2,c,negative,0.6,0.4\nx3,d,positive,0.3,0.7\n"
    )
    rec = record_from_run_dir(run, arm="scratch", seed=0, fraction=1.0, classes=["negative", "positive"])
    assert rec.ok and rec.n_train_patients == 2 and rec.best_epoch == 2
    assert rec.predictions.probs[:, 1].tolist() == pytest.approx([0.3, 0.7])
    assert rec.test_metrics["auroc"] == 1.0 and rec.best_val("auroc") == 0.8
    assert [c["time_s"] for c in rec.curve] == [5.0, 10.1]
    (run / "predictions_test.csv").unlink()
    bad = record_from_run_dir(run, arm="scratch", seed=0, fraction=1.0, classes=["negative", "positive"])
    assert bad.status == "failed" and "predictions_test.csv" in bad.error


def test_constant_predictions_are_flagged(tmp_path):
    res = make_results({"imagenet": 3.0, "scratch": 0.5}, seeds=(0,))
    for r in res.runs:
        if r.arm == "scratch":
            r.predictions.probs[:] = [0.49, 0.51]
    files = write_report(res, tmp_path, n_resamples=100)
    md = files.report_md.read_text()
    assert "scratch: in 2 of 2 runs the model gave every test patient the same" in md
    assert "MobileNetV2 ImageNet" not in " ".join(res.summary.warnings)
