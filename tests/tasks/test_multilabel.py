"""Multi-label findings (medtl/tasks/multilabel.py): manifests, splits, loss, metrics, thresholds, compare units.

The end-to-end runs (train, predict, evaluate, compare) are in test_multilabel_run.py; the sample manifest in
test_multilabel_sample.py.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medtl.comparison.stats import cluster_resample_counts, paired_difference
from medtl.config import load_config
from medtl.errors import ConfigError, ManifestError, TrainingError
from medtl.metric_specs import metrics_for_task
from medtl.tasks import task_class, task_for
from medtl.tasks.multilabel import (
    MaskedBCEWithLogits,
    MultiLabelTask,
    PatientFindings,
    aggregate_findings,
    choose_thresholds,
    finding_metrics,
)
from medtl.utils import hash_patient_id

# ------------------------------------------------------------------------------------------ helpers


def write_manifest(root: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A manifest CSV whose images are empty files (read with ``check_files``; empty files are never copies)."""
    root.mkdir(parents=True, exist_ok=True)
    col = header.index("image")
    for r in rows:
        (root / r[col]).touch()
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def config(manifest: Path, **multilabel) -> object:
    raw = {
        "task": "multilabel",
        "data": {"manifest": str(manifest)},
        "model": {"arch": "resnet18"},
        "splits": {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
    }
    if multilabel:
        raw["multilabel"] = multilabel
    return load_config(raw)


def read(manifest: Path, **multilabel) -> tuple[list[str], list[dict]]:
    cfg = config(manifest, **multilabel)
    task = task_for(cfg)
    m = task.read_manifest(cfg)
    return task.output_names(cfg, m), task.records(cfg, m)


def targets(records: list[dict]) -> np.ndarray:
    return np.asarray([r["targets"] for r in records], dtype=float)


def nan_equal(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True))


NAN = math.nan

# ------------------------------------------------------------------------------------------ manifests


CHEXPERT_ROWS = [
    ["a.dcm", "P1", "1.0", "0", "M", ""],
    ["b.dcm", "P2", "-1.0", "1", "F", ""],
    ["c.dcm", "P3", "", "-1", "F", ""],
    ["d.dcm", "P4", "0.0", "1.0", "M", ""],
]
CHEXPERT_HEADER = ["image", "patient_id", "Effusion", "Nodule", "Sex", "Comment"]


@pytest.mark.parametrize(
    ("policy", "uncertain_value"),
    [("ignore", NAN), ("zeros", 0.0), ("ones", 1.0)],
)
def test_finding_columns_with_uncertain_and_blank_cells(tmp_path: Path, policy: str, uncertain_value: float) -> None:
    manifest = write_manifest(tmp_path, CHEXPERT_HEADER, CHEXPERT_ROWS)
    findings, records = read(manifest, uncertain=policy)
    # every other column whose filled cells are 0/1/-1: not Sex (M/F), not the all-blank Comment
    assert findings == ["Effusion", "Nodule"]
    u = uncertain_value
    assert nan_equal(targets(records), [[1, 0], [u, 1], [NAN, u], [0, 1]])
    # the generic columns as for every task: patient pseudonyms, rows
    assert [r["patient_id"] for r in records] == [hash_patient_id(p) for p in ("P1", "P2", "P3", "P4")]
    assert [r["row"] for r in records] == [2, 3, 4, 5]
    assert records[0]["label_name"] == "Effusion" and records[2]["label_name"] == ("Nodule" if u == 1 else "none")


def test_labels_column_names_the_findings_present_and_an_empty_cell_means_none(tmp_path: Path) -> None:
    rows = [["a.dcm", "P1", "Nodule|Effusion"], ["b.dcm", "P2", ""], ["c.dcm", "P3", " Effusion "]]
    manifest = write_manifest(tmp_path, ["image", "patient_id", "labels"], rows)
    findings, records = read(manifest)
    assert findings == ["Effusion", "Nodule"]  # sorted names found
    assert nan_equal(targets(records), [[1, 1], [0, 0], [1, 0]])
    # given findings: their order, and a finding no row names is absent everywhere
    findings, records = read(manifest, findings=["Nodule", "Mass", "Effusion"])
    assert findings == ["Nodule", "Mass", "Effusion"]
    assert nan_equal(targets(records), [[1, 0, 1], [0, 0, 0], [0, 0, 1]])
    # another separator and column name
    manifest2 = write_manifest(tmp_path / "b", ["image", "patient_id", "Findings"], [["a.dcm", "P1", "A;B"]])
    findings, records = read(manifest2, labels_column="findings", separator=";")
    assert findings == ["A", "B"] and nan_equal(targets(records), [[1, 1]])


def test_a_name_outside_the_findings_is_an_error_naming_its_row(tmp_path: Path) -> None:
    rows = [["a.dcm", "P1", "Nodule"], ["b.dcm", "P2", "Nodle|Effusion"]]
    manifest = write_manifest(tmp_path, ["image", "patient_id", "labels"], rows)
    with pytest.raises(ManifestError) as err:
        read(manifest, findings=["Nodule", "Effusion"])
    msg = str(err.value)
    assert "row 3" in msg and "'Nodle'" in msg and "did you mean 'Nodule'?" in msg and "\n" not in msg


def test_bad_cells_and_missing_columns_are_errors_naming_rows_and_columns(tmp_path: Path) -> None:
    rows = [["a.dcm", "P1", "1", "yes"], ["b.dcm", "P2", "2", "0"], ["c.dcm", "P3", "nan", "1"]]
    manifest = write_manifest(tmp_path, ["image", "patient_id", "Effusion", "Nodule"], rows)
    with pytest.raises(ManifestError) as err:
        read(manifest, findings=["Effusion", "Nodule"])
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "row 2: column 'Nodule' holds 'yes'" in msg and "row 3: column 'Effusion' holds '2'" in msg
    assert "row 4: column 'Effusion' holds 'nan'" in msg
    # a finding without its column: the columns seen, and the closest
    with pytest.raises(ManifestError, match=r"no column for finding\(s\) 'Efusion' \(did you mean 'Effusion'\?\)"):
        read(manifest, findings=["Efusion"])
    # no finding column at all
    plain = write_manifest(tmp_path / "p", ["image", "patient_id", "Sex"], [["a.dcm", "P1", "M"]])
    with pytest.raises(ManifestError, match=r"has no finding columns.*columns besides image and patient: Sex"):
        read(plain)


def test_findings_whose_names_clash_are_refused(tmp_path: Path) -> None:
    # auroc_micro would be both the pooled AUROC and the AUROC of a finding named "micro"
    manifest = write_manifest(tmp_path, ["image", "patient_id", "micro", "B"], [["a.dcm", "P1", "1", "0"]])
    with pytest.raises(ManifestError, match=r"clash \(auroc_micro, average_precision_micro\)"):
        read(manifest)
    # a finding named like a column of the predictions file
    m2 = write_manifest(tmp_path / "b", ["image", "patient_id", "labels"], [["a.dcm", "P1", "split|B"]])
    with pytest.raises(ManifestError, match="'split' has the name of a column of the predictions file"):
        read(m2)
    with pytest.raises(ConfigError, match="clash"):
        MultiLabelTask(["x", "prob_x"])


def test_the_generic_columns_are_checked_as_for_every_task(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, ["image", "patient_id", "A"], [["a.dcm", "P1", "1"]])
    with open(manifest, "a") as fh:
        fh.write("missing.dcm,P2,0\n")
    with pytest.raises(ManifestError, match=r"row 3: image 'missing.dcm' not found"):
        read(manifest)


def test_config_section_and_the_options_it_refuses(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    base = {"data": {"manifest": str(manifest)}, "model": {"arch": "resnet18"}}
    cfg = load_config({**base, "task": "multilabel"})
    assert cfg.multilabel is not None and cfg.multilabel.uncertain == "ignore" and cfg.train.monitor == "val_auroc"
    # the section alone makes the run multi-label
    assert load_config({**base, "multilabel": {"uncertain": "ones"}}).task == "multilabel"
    for extra, words in [
        ({"train": {"class_balance": "weighted_loss"}}, "multilabel.pos_weight"),
        ({"train": {"label_smoothing": 0.1}}, "label_smoothing"),
        ({"data": {"manifest": str(manifest), "classes": ["a", "b"]}}, "multilabel.findings"),
        ({"multilabel": {"findings": ["A", "B"], "pos_weight": [1.0]}}, "pos_weight has 1 weights"),
        ({"multilabel": {"findings": ["A", "A"]}}, "more than once"),
        ({"multilabel": {"uncertain": "maybe"}}, "uncertain"),
    ]:
        with pytest.raises(ConfigError, match=words):
            load_config({**base, "task": "multilabel", **extra})


# ------------------------------------------------------------------------------------------ splits


def split_records(n_patients: int = 60, seed: int = 3) -> list[dict]:
    """Patients with 1-2 scans and three findings in 10%, 30% and 60% of them (a patient's scans agree)."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n_patients, 3))
    for j, share in enumerate((0.1, 0.3, 0.6)):
        y[rng.permutation(n_patients)[: round(share * n_patients)], j] = 1.0
    records = []
    for p in range(n_patients):
        for _ in range(1 + p % 2):
            records.append({"patient_id": f"p{p:03d}", "targets": list(y[p]), "row": len(records) + 2, "split": None})
    return records


class Splits:
    seed, val_fraction, test_fraction, folds, fold = 0, 0.2, 0.2, None, 0


def patient_y(records: list[dict], patients) -> np.ndarray:
    by = {r["patient_id"]: r["targets"] for r in records}
    return np.asarray([by[p] for p in patients], dtype=float)


def test_iterative_split_by_patient_keeps_each_findings_share_in_every_split() -> None:
    records = split_records()
    assignment = MultiLabelTask.make_splits(records, Splits)
    assert set(assignment) == {r["patient_id"] for r in records}  # one split per patient, none crossing
    assert MultiLabelTask.make_splits(records, Splits) == assignment  # deterministic
    other = type("S", (Splits,), {"seed": 1})
    assert MultiLabelTask.make_splits(records, other) != assignment
    total = patient_y(records, sorted(assignment)).sum(axis=0)
    for split, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        patients = [p for p, s in assignment.items() if s == split]
        assert len(patients) == pytest.approx(60 * share, abs=2)
        positives = patient_y(records, patients).sum(axis=0)
        assert (positives >= 1).all(), (split, positives)  # even the rare finding (6 patients) is everywhere
        # each finding's positives split in the subsets' proportions, to within one patient
        assert np.abs(positives - share * total).max() <= 1.0 + 1e-9, (split, positives, total)
    # a manifest's split column wins
    given = [dict(r, split="test" if r["patient_id"] < "p010" else "train") for r in records]
    assert set(MultiLabelTask.make_splits(given, Splits).values()) == {"train", "test"}


def test_folds_are_stratified_and_cover_the_patients_outside_the_test_set() -> None:
    records = split_records()
    vals = []
    for fold in range(3):
        s = type("S", (Splits,), {"folds": 3, "fold": fold})
        a = MultiLabelTask.make_splits(records, s)
        vals.append({p for p, v in a.items() if v == "val"})
        test = {p for p, v in a.items() if v == "test"}
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])
    assert set().union(*vals) | test == {r["patient_id"] for r in records}
    for v in vals:
        assert (patient_y(records, sorted(v)).sum(axis=0) >= 1).all()


def test_label_fractions_are_nested_and_stratified() -> None:
    records = split_records(n_patients=80)
    train = sorted({r["patient_id"] for r in records})
    chosen = {f: MultiLabelTask.fraction_patients(train, records, f, seed=5) for f in (0.1, 0.25, 0.5, 1.0)}
    assert chosen[0.1] and set(chosen[0.1]) < set(chosen[0.25]) < set(chosen[0.5]) < set(chosen[1.0])
    assert [len(chosen[f]) for f in (0.1, 0.25, 0.5)] == [8, 20, 40]
    total = patient_y(records, train).sum(axis=0)
    for f in (0.25, 0.5):
        got = patient_y(records, chosen[f]).sum(axis=0)
        assert np.abs(got - f * total).max() <= 1.5, (f, got, f * total)
    assert MultiLabelTask.fraction_patients(train, records, 0.25, seed=5) == chosen[0.25]
    assert MultiLabelTask.fraction_patients(train, records, 0.25, seed=6) != chosen[0.25]


def test_a_finding_without_positive_or_negative_training_patients_is_refused() -> None:
    records = [
        {"patient_id": "a", "targets": [1.0, 0.0]},
        {"patient_id": "b", "targets": [0.0, NAN]},
        {"patient_id": "c", "targets": [1.0, 1.0]},
    ]
    task = MultiLabelTask(["Nodule", "Mass"])
    task.check_training_split(records, {"a": "train", "b": "train", "c": "train"}, "m.csv")
    with pytest.raises(TrainingError) as err:
        task.check_training_split(records, {"a": "train", "b": "val", "c": "val"}, "m.csv")
    msg = str(err.value)
    assert "Nodule (1 positive, 0 negative); Mass (0 positive, 1 negative)" in msg and "in m.csv" in msg
    # an unknown label is no negative
    with pytest.raises(TrainingError, match=r"finding\(s\) Mass \(1 positive, 0 negative\) lack"):
        task.check_training_split(records, {"a": "val", "b": "train", "c": "train"}, "m.csv")


# ------------------------------------------------------------------------------------------ loss


def test_loss_masks_unknown_entries_and_weights_positives() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    t = torch.tensor([[1, 0, NAN], [0, NAN, NAN], [1, 1, 0], [NAN, NAN, NAN], [0, 1, 1]], dtype=torch.float32)
    known = torch.isfinite(t)
    loss = MaskedBCEWithLogits()(logits, t)
    manual = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], t[known])
    assert float(loss.detach()) == pytest.approx(float(manual.detach()), abs=1e-6)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0) and torch.all(logits.grad[known] != 0)
    # positive weights: as torch's own, on the known entries
    w = [2.0, 0.5, 3.0]
    weighted = MaskedBCEWithLogits(w)(logits, t)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(t), pos_weight=torch.tensor(w), reduction="none"
    )[known].mean()
    assert float(weighted.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    assert "pos_weight" not in MaskedBCEWithLogits(w).state_dict()  # checkpoints load whatever the weights
    # nothing known: 0, not NaN
    assert float(MaskedBCEWithLogits()(logits.detach(), torch.full((5, 3), NAN))) == 0.0
    # per sample: the mean over its known findings
    per = MultiLabelTask(["a", "b", "c"]).sample_losses(logits.detach(), t)
    row0 = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, :2].detach(), t[0, :2])
    assert float(per[0]) == pytest.approx(float(row0), abs=1e-6) and float(per[3]) == 0.0


def test_balanced_positive_weights_are_learnt_from_the_training_scans(tmp_path: Path) -> None:
    from types import SimpleNamespace

    train = [{"targets": t} for t in ([1.0, 0.0, 0.0], [0.0, NAN, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0])]
    exp = SimpleNamespace(config=config(tmp_path / "m.csv", pos_weight="balanced"), splits={"train": train})
    task = MultiLabelTask(["A", "B", "C"])
    task.fit(exp)
    assert task.pos_weight == [1.0, 2.0, 1.0]  # A: 2 negatives / 2 positives; B: 2 / 1 (unknown aside); C: none
    assert task.state()["pos_weight"] == [1.0, 2.0, 1.0] and task.make_loss().pos_weight.tolist() == [1.0, 2.0, 1.0]
    unweighted = MultiLabelTask(["A", "B", "C"])
    unweighted.fit(SimpleNamespace(config=config(tmp_path / "m.csv"), splits={"train": train}))
    assert unweighted.pos_weight is None


def test_per_scan_averages_the_slices_of_a_scan_and_keeps_its_targets() -> None:
    task = MultiLabelTask(["a", "b"])
    scores = torch.tensor([[0.2, 0.4], [0.4, 0.8], [0.9, 0.1]])
    t = torch.tensor([[1.0, NAN], [1.0, NAN], [0.0, 1.0]])
    s, y, ids = task.per_scan(scores, t, torch.tensor([7, 7, 3]))
    assert ids.tolist() == [3, 7]
    assert torch.allclose(s, torch.tensor([[0.9, 0.1], [0.3, 0.6]]))
    assert nan_equal(y, [[0, 1], [1, NAN]])


# ------------------------------------------------------------------------------------------ metrics


def random_case(n: int = 40, f: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with ties and labels with unknown entries; finding 2 has one class among its known labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, f)) < 0.4).astype(float)
    p = np.clip(np.round(0.35 * y + rng.random((n, f)) * 0.65, 1), 0, 1)  # rounded: ties
    y[rng.random((n, f)) < 0.2] = NAN
    y[:, 2] = np.where(np.isnan(y[:, 2]), NAN, 0.0)
    return p, y


def test_metrics_equal_scikit_learn_on_the_known_labels() -> None:
    p, y = random_case()
    findings, thr = ["A", "B", "C"], [0.5, 0.4, 0.6]
    m = finding_metrics(p, y, thr, findings)
    assert set(metrics_for_task("multilabel")) <= set(m)
    per: dict[str, list[float]] = {"auroc": [], "average_precision": [], "f1": []}
    for j, f in enumerate(findings):
        k = ~np.isnan(y[:, j])
        if j < 2:
            per["auroc"].append(roc_auc_score(y[k, j], p[k, j]))
            per["average_precision"].append(average_precision_score(y[k, j], p[k, j]))
            assert m[f"auroc_{f}"] == pytest.approx(per["auroc"][-1], abs=1e-12)
            assert m[f"average_precision_{f}"] == pytest.approx(per["average_precision"][-1], abs=1e-12)
        else:  # one class: no AUROC, no average precision; left out of the macro means
            assert math.isnan(m[f"auroc_{f}"]) and math.isnan(m[f"average_precision_{f}"])
        pred = (p[k, j] >= thr[j]).astype(int)
        if pred.any() or y[k, j].any():
            per["f1"].append(f1_score(y[k, j].astype(int), pred))
            assert m[f"f1_{f}"] == pytest.approx(per["f1"][-1], abs=1e-12)
    for name, values in per.items():
        assert m[name] == pytest.approx(np.mean(values), abs=1e-12), name
    known = ~np.isnan(y)
    assert m["auroc_micro"] == pytest.approx(roc_auc_score(y[known], p[known]), abs=1e-12)
    assert m["average_precision_micro"] == pytest.approx(average_precision_score(y[known], p[known]), abs=1e-12)
    assert m["n"] == 40
    # the task computes the same from tensors
    task = MultiLabelTask(findings, thresholds=thr)
    assert task.metrics(torch.tensor(p), torch.tensor(y))["auroc"] == pytest.approx(m["auroc"], abs=1e-9)
    # no scan at all: every metric undefined, not an error
    empty = finding_metrics(np.zeros((0, 3)), np.zeros((0, 3)), thr, findings)
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in metrics_for_task("multilabel"))
    with pytest.raises(TrainingError, match="NaN or infinite"):
        finding_metrics(np.full((2, 3), NAN), np.zeros((2, 3)), thr, findings)


def test_monitor_falls_back_on_the_pooled_auroc_when_no_finding_has_both_classes() -> None:
    task = MultiLabelTask(["A", "B"])
    # A only positive, B only negative: no per-finding AUROC, but the pooled pairs hold both classes
    m = task.metrics(torch.tensor([[0.9, 0.2], [0.8, 0.3]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert math.isnan(m["auroc"]) and m["auroc_micro"] == 1.0
    assert task.monitor_value(m, "auroc") == 1.0 and task.monitor_value(m, "f1") == m["f1"]


def test_thresholds_chosen_on_validation_scans() -> None:
    p, y = random_case(n=60, seed=4)
    thr, kept = choose_thresholds(p, y, "youden", 0.5, 3)
    assert kept == [2] and thr[2] == 0.5  # one class: the default stays
    for j in range(2):
        k = ~np.isnan(y[:, j])
        yy, ss = y[k, j] == 1, p[k, j]

        def youden(t, yy=yy, ss=ss):
            pred = ss >= t
            return pred[yy].mean() - pred[~yy].mean()

        best = max(youden(t) for t in np.unique(ss))
        assert youden(thr[j]) == pytest.approx(best, abs=1e-12)
    thr_f1, _ = choose_thresholds(p, y, "f1", 0.5, 3)
    for j in range(2):
        k = ~np.isnan(y[:, j])
        best = max(f1_score(y[k, j].astype(int), (p[k, j] >= t).astype(int)) for t in np.unique(p[k, j]))
        assert f1_score(y[k, j].astype(int), (p[k, j] >= thr_f1[j]).astype(int)) == pytest.approx(best, abs=1e-12)
    # the task learns them from the validation scans and records them in its state
    task = MultiLabelTask(["A", "B", "C"], threshold_rule="youden")
    task.learn_from_validation(torch.tensor(p), torch.tensor(y))
    assert task.thresholds == pytest.approx(thr) and task.state()["thresholds"] == pytest.approx(thr)
    assert task.result_extras()["thresholds_not_chosen"] == ["C"]
    fixed = MultiLabelTask(["A", "B", "C"], threshold_value=0.3)
    fixed.learn_from_validation(torch.tensor(p), torch.tensor(y))
    assert fixed.thresholds == [0.3, 0.3, 0.3]
    restored = MultiLabelTask.from_state(
        config(Path("m.csv")), {"classes": ["A", "B", "C"], "thresholds": thr, "pos_weight": [1.0, 2.0, 3.0]}, None
    )
    assert restored.thresholds == pytest.approx(thr) and restored.pos_weight == [1.0, 2.0, 3.0]


def test_prediction_rows_give_truth_probabilities_and_decisions_at_the_thresholds() -> None:
    task = MultiLabelTask(["A", "B"], thresholds=[0.5, 0.2])
    records = [{"image": "/x/a.dcm", "patient_id": "pa", "targets": [1.0, NAN]}]
    rows = task.prediction_rows(records, torch.tensor([[0.4, 0.3]]), torch.tensor([0]), with_labels=True)
    assert list(rows[0]) == task.prediction_columns(with_labels=True)
    assert rows[0] == {
        "image": "/x/a.dcm",
        "patient_id": "pa",
        "A": 1,
        "B": "",
        "prob_A": pytest.approx(0.4),
        "prob_B": pytest.approx(0.3),
        "pred_A": 0,
        "pred_B": 1,
    }
    assert task.prediction_columns(with_labels=False) == ["image", "patient_id", "prob_A", "prob_B", "pred_A", "pred_B"]


# ------------------------------------------------------------------------------------------ compare units


def units_case(seed: int = 0) -> PatientFindings:
    p, y = random_case(n=30, seed=seed)
    y[:5, 0] = NAN  # a few more unknowns
    pids = np.asarray([f"p{i // 2:02d}" for i in range(30)], dtype=object)  # patients of two units
    return PatientFindings(pids, ["A", "B", "C"], p, y, np.ones(30, dtype=int), np.asarray([0.5, 0.4, 0.6]))


@pytest.mark.slow  # many resamples; the unweighted metrics are checked against scikit-learn by default
def test_weighted_metrics_equal_scikit_learn_on_expanded_resamples() -> None:
    units = units_case()
    counts = cluster_resample_counts(units.patient_id, n_resamples=25, seed=1)
    assert "auroc_A" in units.metric_names and "average_precision_B" in units.metric_names
    for name in units.metric_names:
        fast = units.weighted(name, counts)
        assert units.weighted(name, np.ones((1, len(units))))[0] == pytest.approx(
            units.metric(name), abs=1e-12, nan_ok=True
        )
        for b in range(counts.shape[0]):
            idx = np.repeat(np.arange(len(units)), counts[b])
            expected = finding_metrics(units.probs[idx], units.labels[idx], units.thresholds, units.findings)[name]
            assert fast[b] == pytest.approx(expected, abs=1e-12, nan_ok=True), (name, b)


def test_units_from_a_predictions_file_round_trip_and_align() -> None:
    header = ["image", "patient_id", "A", "B", "prob_A", "prob_B", "pred_A", "pred_B"]
    rows = [
        dict(zip(header, r, strict=True))
        for r in [
            ["1", "p1", "1", "", "0.8", "0.1", "1", "0"],
            ["2", "p1", "1", "", "0.6", "0.3", "1", "0"],  # same patient, same labels: one unit
            ["3", "p1", "0", "1", "0.2", "0.9", "0", "1"],  # same patient, other labels: a unit of its own
            ["4", "p2", "0", "0", "0.4", "0.5", "0", "1"],
        ]
    ]
    u = aggregate_findings(rows, ["A", "B"], [0.5, 0.45])
    assert len(u) == 3 and sorted(u.patient_id.tolist()) == ["p1", "p1", "p2"]
    i = next(k for k in range(3) if u.n_images[k] == 2)
    assert u.probs[i] == pytest.approx([0.7, 0.2]) and nan_equal(u.labels[i], [1, NAN])
    assert u.counts(0) == (1, 1, 0) and u.counts(1) == (1, 1, 0)  # p1 has B in one unit: present
    again = PatientFindings.from_dict(u.to_dict())
    assert again.to_dict() == u.to_dict() and u.to_dict()["kind"] == "multilabel"
    assert again.same_units(u)
    a, b = u.align(u._take(np.asarray([2, 0])))
    assert len(a) == len(b) == 2 and a.same_units(b)
    assert MultiLabelTask.units_from_dict(u.to_dict()).same_units(u)
    from medtl.errors import RunDirError

    with pytest.raises(RunDirError, match="missing prob_B"):
        aggregate_findings([{k: v for k, v in rows[0].items() if k != "prob_B"}], ["A", "B"])


def test_units_of_a_folder_without_the_runs_state_use_the_default_thresholds(tmp_path: Path) -> None:
    from medtl.rundir import RunDir

    run = RunDir(tmp_path)
    task = MultiLabelTask(["A", "B"], thresholds=[0.3, 0.7])
    records = [{"image": f"/x/{i}.dcm", "patient_id": f"p{i}", "targets": [float(i % 2), 1.0]} for i in range(4)]
    scores = torch.tensor([[0.2, 0.6], [0.4, 0.8], [0.1, 0.9], [0.9, 0.5]])
    rows = task.prediction_rows(records, scores, torch.arange(4), with_labels=True)
    run.write_predictions("test", task.prediction_columns(with_labels=True), rows)
    units = MultiLabelTask.patient_units(run, ["A", "B"])
    assert units.thresholds.tolist() == [0.5, 0.5] and len(units) == 4
    np.testing.assert_allclose(units.probs, scores.numpy(), atol=1e-6)


def test_paired_difference_on_finding_units_resamples_patients_jointly() -> None:
    base = units_case()
    rng = np.random.default_rng(7)

    def arm(shift: float) -> list[PatientFindings]:
        # per seed: the base labels, probabilities that follow them more (shift > 0) or less, plus noise
        return [
            PatientFindings(
                base.patient_id,
                base.findings,
                np.clip(base.probs + shift * np.nan_to_num(base.labels) + rng.normal(0, 0.05, base.probs.shape), 0, 1),
                base.labels,
                base.n_images,
                base.thresholds,
            )
            for _ in range(3)
        ]

    a, b = arm(0.3), arm(0.0)
    d = paired_difference(a, b, "auroc", n_resamples=300, seed=0)
    expected = np.mean([x.metric("auroc") - y.metric("auroc") for x, y in zip(a, b, strict=True)])
    assert d.difference == pytest.approx(expected, abs=1e-12) and d.difference > 0
    assert d.n_patients == 15 and d.n_seeds == 3 and d.delong is None
    assert math.isfinite(d.low) and d.low < d.difference < d.high


def test_runs_that_predict_the_same_for_every_patient_are_warned_about():
    from types import SimpleNamespace

    class Predictions:
        def __init__(self, probs):
            self.probs = np.asarray(probs, dtype=float)

        def __len__(self):
            return len(self.probs)

    arm = SimpleNamespace(display="scratch")
    flat = SimpleNamespace(predictions=Predictions([[0.2, 0.7]] * 4))
    varied = SimpleNamespace(predictions=Predictions([[0.2, 0.7], [0.3, 0.7], [0.2, 0.7], [0.2, 0.6]]))
    task = task_class("multilabel")
    (warning,) = task.run_warnings(None, arm, [flat, varied])
    assert warning.startswith("scratch: in 1 of 2 runs the model gave every test patient the same probabilities")
    assert task.run_warnings(None, arm, [varied]) == []
