"""Patient-level splits: stratified train/val/test, k-fold, nested label fractions, and a leakage check.

Splits are always by patient, never by image or slice: slices of one patient in both training and test
inflate accuracy by tens of points. Every function is seeded and deterministic.

Stratification is by each patient's label. Records without a label (a segmentation manifest read without a label
column gives every record label 0, :data:`~medtl.data.manifest_csv.UNLABELLED`; a plain dict may have no ``label``
key at all) form one stratum, so the same functions split them by patient without stratification, and a label
fraction keeps that fraction of the training patients.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import ManifestError, TrainingError

__all__ = [
    "SPLITS",
    "patient_labels",
    "make_splits",
    "label_fraction_patients",
    "iterative_stratify",
    "iterative_order",
    "check_no_leakage",
    "read_splits_csv",
    "write_splits_csv",
]

SPLITS = ("train", "val", "test")


def _records(manifest: Any) -> list[dict[str, Any]]:
    if hasattr(manifest, "to_dicts"):
        return list(manifest.to_dicts())
    return [dict(r) for r in manifest]


def patient_labels(manifest: Any) -> dict[str, int]:
    """One label per patient: the most frequent label among the patient's scans (ties: the lowest index).

    A record without a label (no ``label`` key, or None) counts as label 0: unlabelled records form one stratum.
    """
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for rec in _records(manifest):
        label = rec.get("label")
        counts[str(rec["patient_id"])][0 if label is None else int(label)] += 1
    return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for p, c in counts.items()}


def _stratified_fractions(
    patients_by_label: Mapping[int, list[str]], fractions: Sequence[float], rng: np.random.Generator
) -> list[list[str]]:
    """Split each class's patients into len(fractions)+1 parts (the last takes the rest), stratified."""
    parts: list[list[str]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(patients_by_label):
        pats = sorted(patients_by_label[label])
        order = [pats[i] for i in rng.permutation(len(pats))]
        n = len(order)
        start = 0
        for j, frac in enumerate(fractions):
            k = int(round(n * frac))
            # keep at least one patient for the remainder (training) when the class has two or more
            k = max(0, min(k, n - start - 1)) if n >= 2 else 0
            parts[j].extend(order[start : start + k])
            start += k
        parts[-1].extend(order[start:])
    return parts


def make_splits(
    manifest: Any,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    folds: int | None = None,
    fold: int = 0,
    use_manifest_split: bool = True,
    strata: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Assign every patient to ``train``, ``val`` or ``test``.

    Stratified by the patient's label (records without one: a single stratum, see the module docstring). If the
    manifest has a ``split`` on every row (and ``use_manifest_split``), that is used instead, after checking each
    patient sits in one split.
    With ``folds``, a stratified test set of ``test_fraction`` is held out first, the other patients are
    divided into ``folds`` stratified folds and fold ``fold`` is the validation set.

    Args:
        manifest: a Manifest or a list of record dicts (``patient_id``, optional ``label`` and ``split``).
        seed: the seed; the same seed gives the same split.
        val_fraction: fraction of patients for validation (ignored with ``folds``).
        test_fraction: fraction of patients for the test set.
        folds: number of cross-validation folds, or None.
        fold: the validation fold with ``folds``.
        use_manifest_split: honour a complete ``split`` column.
        strata: each patient's stratum (a task's own: a regression's bin of its value, say); default the patient's
            label (:func:`patient_labels`).

    Returns:
        ``{patient_id: split}`` for every patient.

    Raises:
        ManifestError: the manifest's split column is partial, invalid, or puts a patient in two splits.
    """
    records = _records(manifest)
    if not records:
        raise ManifestError("the manifest has no rows; add at least one scan per class and split")
    given = [r.get("split") for r in records]
    if use_manifest_split and any(s not in (None, "") for s in given):
        return _splits_from_column(records)
    labels = dict(strata) if strata is not None else patient_labels(records)
    by_label: dict[int, list[str]] = defaultdict(list)
    for p, lab in labels.items():
        by_label[lab].append(p)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    if folds is None:
        test, val, train = _stratified_fractions(by_label, [test_fraction, val_fraction], rng)
        for name, group in (("test", test), ("val", val), ("train", train)):
            assignment.update(dict.fromkeys(group, name))
    else:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
        test, rest = _stratified_fractions(by_label, [test_fraction], rng)
        assignment.update(dict.fromkeys(test, "test"))
        # deal each class's shuffled patients round-robin into folds: stratified, sizes differ by at most one
        rest_set = set(rest)
        for label in sorted(by_label):
            pats = sorted(p for p in by_label[label] if p in rest_set)
            order = [pats[i] for i in rng.permutation(len(pats))]
            for i, p in enumerate(order):
                assignment[p] = "val" if i % folds == fold else "train"
    return assignment


def _splits_from_column(records: list[dict[str, Any]]) -> dict[str, str]:
    problems = []
    assignment: dict[str, str] = {}
    for r in records:
        s = r.get("split")
        row = r.get("row", "?")
        if s in (None, ""):
            problems.append(f"row {row}: empty split (fill every row, or remove the column to split automatically)")
            continue
        s = str(s).strip().lower()
        if s not in SPLITS:
            problems.append(f"row {row}: split {s!r} is not one of train, val, test")
            continue
        p = str(r["patient_id"])
        if assignment.get(p, s) != s:
            problems.append(f"row {row}: patient {p} is in both {assignment[p]!r} and {s!r}")
        assignment.setdefault(p, s)
    if problems:
        raise ManifestError("manifest split column: " + "; ".join(problems))
    return assignment


def label_fraction_patients(
    train_patients: Sequence[str], labels: Sequence[int] | Mapping[str, int], fraction: float, seed: int = 0
) -> list[str]:
    """A stratified subset of the training patients, nested across fractions.

    Each class's patients are put in one seeded order (independent of ``fraction``) and the first
    ``ceil(fraction * n)`` (at least one) are taken, so for a fixed seed the patients of 0.1 are among those
    of 0.25, which are among those of 0.5, and so on.

    Args:
        train_patients: the training patients.
        labels: each patient's label, aligned with ``train_patients`` or as a mapping.
        fraction: in (0, 1].
        seed: the seed of the order.

    Returns:
        The selected patients, sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if isinstance(labels, Mapping):
        lab = {p: int(labels[p]) for p in train_patients}
    else:
        if len(labels) != len(train_patients):
            raise ValueError("labels must align with train_patients")
        lab = {p: int(v) for p, v in zip(train_patients, labels, strict=True)}
    by_label: dict[int, list[str]] = defaultdict(list)
    for p in sorted(set(train_patients)):
        by_label[lab[p]].append(p)
    chosen: list[str] = []
    for label in sorted(by_label):
        pats = by_label[label]
        # a per-class generator so one class's order does not depend on another's size
        rng = np.random.default_rng([seed, label, 7919])
        order = [pats[i] for i in rng.permutation(len(pats))]
        k = max(1, int(np.ceil(fraction * len(order) - 1e-9)))
        chosen.extend(order[:k])
    return sorted(chosen)


def _label_matrix(labels: Any) -> np.ndarray:
    y = np.asarray(labels, dtype=bool)
    return y[:, None] if y.ndim == 1 else y


def iterative_stratify(labels: np.ndarray, ratios: Sequence[float], seed: int = 0) -> np.ndarray:
    """Multi-label stratification: the subset of each row, so every subset holds about its share of each label.

    The iterative stratification of Sechidis et al. (2011), from the ``iterative-stratification`` package: the
    label with the fewest rows left is dealt first, each of its rows to the subset that still wants most of that
    label; rows without any label fill the subsets that want most rows. Rows are shuffled with the seed first and
    ties are broken with it, so the same seed gives the same subsets.

    Args:
        labels: ``(n_rows, n_labels)``, true where a row has the label (unknown counts as absent).
        ratios: the share of rows each subset should get (they are normalised); a subset of ratio 0 gets none.
        seed: the seed.

    Returns:
        The subset index (into ``ratios``) of each row.
    """
    from iterstrat.ml_stratifiers import IterativeStratification

    y = _label_matrix(labels)  # boolean: the package indexes label columns by a row of the matrix
    r = np.asarray(ratios, dtype=float)
    used = np.flatnonzero(r > 0)
    out = np.zeros(y.shape[0], dtype=np.int64)
    if y.shape[0] == 0 or used.size == 0:
        return out
    rng = np.random.RandomState(seed)
    order = rng.permutation(y.shape[0])
    folds = IterativeStratification(labels=y[order], r=r[used] / r[used].sum(), random_state=rng)
    out[order] = used[folds]
    return out


def iterative_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """An order of the rows whose every prefix is stratified on the labels: the order of nested label fractions.

    The rows are halved by :func:`iterative_stratify`, each half halved again, and so on; the order lists the first
    half's order, then the second's. A prefix is then a union of stratified halves, quarters, eighths... (the
    binary digits of its length), so the first 10% hold about 10% of each label's rows, and the first 10% are
    among the first 25% for any fraction, as nested label fractions require.

    Args:
        labels: ``(n_rows, n_labels)``, true where a row has the label.
        seed: the seed (one order per seed).

    Returns:
        A permutation of ``range(n_rows)``.
    """
    y = _label_matrix(labels)
    out: list[int] = []
    # an explicit stack (first half on top) instead of recursion: deep orders of many rows stay flat
    stack = [(np.arange(y.shape[0]), 0)]
    while stack:
        rows, depth = stack.pop()
        if rows.size <= 1:
            out.extend(rows.tolist())
            continue
        block_seed = int(np.random.SeedSequence([seed, depth, int(rows[0])]).generate_state(1)[0])
        half = iterative_stratify(y[rows], [0.5, 0.5], seed=block_seed)
        first, second = rows[half == 0], rows[half == 1]
        if first.size == 0 or second.size == 0:  # cannot happen for two rows or more; never loop on it
            first, second = rows[: rows.size // 2], rows[rows.size // 2 :]
        stack.append((second, depth + 1))
        stack.append((first, depth + 1))
    return np.asarray(out, dtype=np.int64)


def check_no_leakage(records: Iterable[Mapping[str, Any]], assignment: Mapping[str, str]) -> None:
    """Raise if any patient's scans fall into more than one split, or a patient has no split.

    This is checked on the records themselves (not only on the assignment), so it also catches a
    manifest where one patient appears under two IDs' worth of rows with conflicting splits.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    missing = set()
    for r in records:
        p = str(r["patient_id"])
        if p not in assignment:
            missing.add(p)
            continue
        seen[p].add(assignment[p])
    crossing = {p: s for p, s in seen.items() if len(s) > 1}
    if missing:
        raise TrainingError(
            f"{len(missing)} patient(s) have no split (e.g. {sorted(missing)[0]}); "
            "the splits file must list every patient of the manifest"
        )
    if crossing:
        p, s = next(iter(crossing.items()))
        raise TrainingError(f"patient {p} crosses splits {sorted(s)}; splits must be by patient")
    by_split: dict[str, set[str]] = defaultdict(set)
    for p, s in assignment.items():
        by_split[s].add(p)
    for a in SPLITS:
        for b in SPLITS:
            if a < b and by_split[a] & by_split[b]:
                raise TrainingError(f"patients in both {a} and {b}: {sorted(by_split[a] & by_split[b])[:3]}")


def write_splits_csv(
    path: str | Path,
    assignment: Mapping[str, str],
    labels: Mapping[str, str],
    used: Iterable[str] | None = None,
) -> None:
    """Write ``patient_id, split, label[, used]`` rows (``used``: 1 if the patient is in the training subset)."""
    used_set = None if used is None else set(used)
    rows = []
    order = {s: i for i, s in enumerate(SPLITS)}
    for p in sorted(assignment, key=lambda q: (order.get(assignment[q], 9), q)):
        row = {"patient_id": p, "split": assignment[p], "label": labels.get(p, "")}
        if used_set is not None:
            row["used"] = int(assignment[p] != "train" or p in used_set)
        rows.append(row)
    fields = ["patient_id", "split", "label"] + (["used"] if used_set is not None else [])
    import io

    from medtl.utils import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_splits_csv(path: str | Path) -> dict[str, str]:
    """Read ``{patient_id: split}`` from a splits.csv written by medtl (or by hand: patient_id, split)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"splits file {path} does not exist", path=str(path), fix="check splits.file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"patient_id", "split"} <= set(reader.fieldnames):
            raise ManifestError(
                f"splits file {path} needs columns patient_id and split (has {reader.fieldnames})", path=str(path)
            )
        out: dict[str, str] = {}
        problems = []
        for i, row in enumerate(reader, start=2):
            p, s = row["patient_id"].strip(), row["split"].strip().lower()
            if s not in SPLITS:
                problems.append(f"row {i}: split {s!r} is not one of train, val, test")
            elif out.get(p, s) != s:
                problems.append(f"row {i}: patient {p} is in both {out[p]!r} and {s!r}")
            out.setdefault(p, s)
    if problems:
        raise ManifestError(f"splits file {path}: " + "; ".join(problems), path=str(path))
    return out
