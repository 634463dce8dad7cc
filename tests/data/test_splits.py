"""Patient-level splits: stratified, seeded, k-fold, nested label fractions, leakage checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medtl.data.splits import (
    check_no_leakage,
    label_fraction_patients,
    make_splits,
    patient_labels,
    read_splits_csv,
    write_splits_csv,
)
from medtl.errors import ManifestError, TrainingError


def _records(n_pos: int = 30, n_neg: int = 70, scans: int = 3) -> list[dict]:
    recs = []
    for i in range(n_pos + n_neg):
        for s in range(scans):
            recs.append(
                {"patient_id": f"p{i:03d}", "label": int(i < n_pos), "image": f"p{i}_{s}", "row": len(recs) + 2}
            )
    return recs


def test_split_is_by_patient_stratified_and_seeded() -> None:
    recs = _records()
    a = make_splits(recs, seed=1, val_fraction=0.2, test_fraction=0.2)
    assert a == make_splits(recs, seed=1, val_fraction=0.2, test_fraction=0.2)
    assert a != make_splits(recs, seed=2, val_fraction=0.2, test_fraction=0.2)
    assert set(a) == {r["patient_id"] for r in recs}
    check_no_leakage(recs, a)
    labels = patient_labels(recs)
    per = Counter((a[p], labels[p]) for p in a)
    # 30 positives, 70 negatives: 20% each of val and test, per class
    assert per[("test", 1)] == 6 and per[("val", 1)] == 6 and per[("train", 1)] == 18
    assert per[("test", 0)] == 14 and per[("val", 0)] == 14 and per[("train", 0)] == 42
    # every scan of a patient lands in the patient's split
    for r in recs:
        assert a[r["patient_id"]] in ("train", "val", "test")


def test_kfold_partitions_non_test_patients() -> None:
    recs = _records(20, 20, 1)
    folds = [make_splits(recs, seed=0, test_fraction=0.2, folds=4, fold=k) for k in range(4)]
    tests = [{p for p, s in f.items() if s == "test"} for f in folds]
    assert all(t == tests[0] for t in tests) and len(tests[0]) == 8
    vals = [{p for p, s in f.items() if s == "val"} for f in folds]
    union = set().union(*vals)
    assert len(union) == 32 and sum(len(v) for v in vals) == 32  # disjoint, covering the rest
    labels = patient_labels(recs)
    for v in vals:
        assert Counter(labels[p] for p in v) == Counter({0: 4, 1: 4})


def test_label_fractions_are_nested_stratified_and_seeded() -> None:
    recs = _records(40, 60, 1)
    labels = patient_labels(recs)
    pats = sorted(labels)
    subsets = {f: set(label_fraction_patients(pats, labels, f, seed=3)) for f in (0.1, 0.25, 0.5, 1.0)}
    assert subsets[0.1] <= subsets[0.25] <= subsets[0.5] <= subsets[1.0] == set(pats)
    assert Counter(labels[p] for p in subsets[0.1]) == Counter({0: 6, 1: 4})
    assert Counter(labels[p] for p in subsets[0.5]) == Counter({0: 30, 1: 20})
    assert subsets[0.1] != set(label_fraction_patients(pats, labels, 0.1, seed=4))
    # a tiny fraction still keeps one patient per class
    assert Counter(labels[p] for p in label_fraction_patients(pats, labels, 0.001, seed=0)) == Counter({0: 1, 1: 1})


def test_manifest_split_column_is_honoured_and_checked() -> None:
    recs = _records(2, 2, 2)
    for r in recs:
        r["split"] = "train" if r["patient_id"] in ("p000", "p002") else "val"
    a = make_splits(recs)
    assert a == {"p000": "train", "p002": "train", "p001": "val", "p003": "val"}
    recs[1]["split"] = "test"  # p000's second scan in another split
    with pytest.raises(ManifestError, match=r"row 3: patient p000 is in both 'train' and 'test'"):
        make_splits(recs)


def test_leakage_check_catches_crossing_and_missing_patients() -> None:
    recs = _records(2, 2, 1)
    with pytest.raises(TrainingError, match="no split"):
        check_no_leakage(recs, {"p000": "train"})


def test_splits_csv_round_trip(tmp_path: Path) -> None:
    recs = _records(5, 5, 1)
    a = make_splits(recs, seed=0)
    write_splits_csv(tmp_path / "splits.csv", a, {p: "x" for p in a}, used=[p for p in a if a[p] == "train"][:2])
    assert read_splits_csv(tmp_path / "splits.csv") == a
    text = (tmp_path / "splits.csv").read_text().splitlines()
    assert text[0] == "patient_id,split,label,used"
    assert sum(line.endswith(",0") for line in text[1:]) == sum(v == "train" for v in a.values()) - 2
    (tmp_path / "bad.csv").write_text("patient_id,split\np1,train\np1,val\n")
    with pytest.raises(ManifestError, match="row 3"):
        read_splits_csv(tmp_path / "bad.csv")


def test_empty_manifest() -> None:
    with pytest.raises(ManifestError, match="no rows"):
        make_splits([])


def _unlabelled(n_patients: int = 40, scans: int = 2, with_key: bool = True) -> list[dict]:
    recs = []
    for i in range(n_patients):
        for s in range(scans):
            rec = {"patient_id": f"u{i:03d}", "image": f"u{i}_{s}", "row": len(recs) + 2}
            if with_key:
                rec["label"] = 0  # what a manifest read without labels gives every row
            recs.append(rec)
    return recs


@pytest.mark.parametrize("with_key", [True, False])
def test_records_without_labels_are_split_by_patient_without_stratification(with_key: bool) -> None:
    recs = _unlabelled(with_key=with_key)
    a = make_splits(recs, seed=3, val_fraction=0.2, test_fraction=0.25)
    check_no_leakage(recs, a)
    assert set(a) == {r["patient_id"] for r in recs}
    assert Counter(a.values()) == {"test": 10, "val": 8, "train": 22}
    assert a == make_splits(_unlabelled(with_key=not with_key), seed=3, val_fraction=0.2, test_fraction=0.25)
    assert set(patient_labels(recs).values()) == {0}
    folds = make_splits(recs, seed=3, folds=4, fold=1, test_fraction=0.25)
    check_no_leakage(recs, folds)
    assert Counter(folds.values()) == {"test": 10, "val": 8, "train": 22}


def test_a_label_fraction_of_unlabelled_patients_keeps_that_fraction_nested() -> None:
    recs = _unlabelled(with_key=False)
    train = sorted(p for p, s in make_splits(recs, seed=0).items() if s == "train")
    labels = patient_labels(recs)
    chosen = {f: label_fraction_patients(train, labels, f, seed=0) for f in (0.25, 0.5, 1.0)}
    assert [len(chosen[f]) for f in (0.25, 0.5, 1.0)] == [int(np.ceil(f * len(train))) for f in (0.25, 0.5, 1.0)]
    assert set(chosen[0.25]) <= set(chosen[0.5]) <= set(chosen[1.0]) == set(train)
