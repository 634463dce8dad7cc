"""A comparison never deletes a finished run and never reuses a stale one (real tiny training, real files).

A finished comparison (2 arms x 1 seed x 1 fraction, 1 epoch on 16 px radiographs) is trained once per module and
copied back into place before each test, so every test starts from the same finished folder at the same path. The
power note is checked on hand-made runs: its numbers need no training.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.compare import write_manifest

from medtl.cli import main
from medtl.comparison.compare import compare
from medtl.comparison.report import write_report
from medtl.comparison.results import Arm, CompareResults, RunRecord
from medtl.comparison.stats import METRICS, aggregate_by_patient, compute_metric
from medtl.comparison.summary import summarize
from medtl.errors import MedtlError
from medtl.rundir import RunDir, RunLockedError

_CONFIG = (
    "data: {manifest: data/manifest.csv, mode: 2d}\n"
    "splits: {val_fraction: 0.25, test_fraction: 0.25}\n"
    "preprocess: {size: [16, 16]}\n"
    "augment: {enabled: false}\n"
    "model: {arch: resnet18}\n"
    "train: {epochs: 1, lr: 0.001, batch_size: 8, accelerator: cpu, threads: 1, precise_bn_batches: 2, "
    "loggers: [csv]}\n"
    "compare:\n"
    "  arms:\n"
    "    - {name: finetuned, model: {weights: scratch}, schedule: fine_tune}\n"
    "    - {name: scratch, model: {weights: scratch}}\n"
    "  seeds: 1\n"
    "  fractions: [1.0]\n"
    "  n_resamples: 100\n"
)
_RUNS = ("runs/finetuned/frac1-seed0", "runs/scratch/frac1-seed0")


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _under(tree: dict[str, str], prefix: str) -> dict[str, str]:
    return {k: v for k, v in tree.items() if k.startswith(prefix)}


def _test_patients(splits_csv: Path) -> set[str]:
    with open(splits_csv, newline="") as fh:
        return {r["patient_id"] for r in csv.DictReader(fh) if r["split"] == "test"}


@pytest.fixture(scope="module")
def _trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("integrity")
    work = root / "work"
    write_manifest(work / "data", n_patients=16, size=16)
    (work / "compare.yaml").write_text(_CONFIG)
    res = compare(work / "compare.yaml", out_dir=work / "cmp")
    assert [r.status for r in res.results.runs] == ["ok", "ok"], [r.error for r in res.results.runs]
    pristine = root / "pristine"
    shutil.copytree(work, pristine)
    return work, pristine


@pytest.fixture
def finished(_trained: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """``(config, compare dir)`` of the finished comparison, restored byte for byte at its own path."""
    work, pristine = _trained
    shutil.rmtree(work)
    shutil.copytree(pristine, work)
    yield work / "compare.yaml", work / "cmp"


def _holder(folder: Path, ready: Any) -> None:
    with RunDir(folder).lock():
        ready.set()
        time.sleep(120)


def _hold_lock(folder: Path) -> Any:
    """A live process (forked: no imports to wait for) holding the lock of ``folder``."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_holder, args=(folder, ready), daemon=True)
    child.start()
    if not ready.wait(30):
        _stop(child)
        pytest.fail(f"the child process could not take the lock of {folder}")
    return child


def _stop(child: Any) -> None:
    child.kill()
    child.join()


# ------------------------------------------------------------------------------------------------ D5


def test_a_changed_lr_is_refused_and_replace_moves_the_old_runs_aside(finished: tuple[Path, Path]) -> None:
    cfg, out = finished
    before = _tree(out)
    with pytest.raises(MedtlError) as info:
        compare(cfg, out_dir=out, overrides={"train.lr": 0.01})
    msg = str(info.value)
    assert "\n" not in msg
    assert "train.lr: 0.001 -> 0.01" in msg and "--replace" in msg and "--out" in msg
    assert _tree(out) == before  # nothing written, moved or deleted

    events: list[str] = []
    res = compare(cfg, out_dir=out, overrides={"train.lr": 0.01}, replace=True, on_event=events.append)
    assert [r.status for r in res.results.runs] == ["ok", "ok"]
    assert sum(e.endswith(": training") for e in events) == 2
    (old,) = (out / "superseded").iterdir()
    kept = _tree(old)
    for run in _RUNS:  # every file of the old runs, byte for byte, best.ckpt and result.json included
        assert _under(before, run) and _under(kept, run) == _under(before, run)
        assert (old / run / "best.ckpt").is_file()
    for name in ("splits.csv", "results.json", "report.md"):
        assert kept[name] == before[name]
    for run in _RUNS:  # the new runs trained with the new rate
        assert "lr: 0.01\n" in (out / run / "config.yaml").read_text()
        assert json.loads((out / run / "result.json").read_text())["status"] == "ok"


# ------------------------------------------------------------------------------------------------ D6


def test_another_pseudonym_secret_is_refused_before_anything_changes(
    finished: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out = finished
    before = _tree(out)
    monkeypatch.setenv("MEDTL_ID_SECRET", "another-secret-of-this-study-0123456789")
    with pytest.raises(MedtlError, match="pseudonym secret") as info:
        compare(cfg, out_dir=out)
    assert "\n" not in str(info.value)
    assert _tree(out) == before


# ------------------------------------------------------------------------------------------------ D7


def test_a_second_compare_on_a_locked_folder_is_one_line_and_touches_nothing(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, out = finished
    # the first compare is training the scratch run (its folder is unfinished) while it holds the folder's lock
    result = out / _RUNS[1] / "result.json"
    result.write_text(json.dumps({"status": "running"}))
    child = _hold_lock(out)
    before = _tree(out)
    try:
        code = main(["compare", str(cfg), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code != 0
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        assert f"in use by process {child.pid}" in err
        assert _tree(out) == before
    finally:
        _stop(child)
    # that process is gone: its lock is stale, and the unfinished run is trained again
    events: list[str] = []
    compare(cfg, out_dir=out, on_event=events.append)
    assert [e for e in events if e.endswith(": training")] == ["[2/2] scratch seed 0 100% labels: training"]
    assert not (out / ".lock").exists()


def test_a_run_folder_held_by_a_live_process_is_never_cleared(finished: tuple[Path, Path]) -> None:
    cfg, out = finished
    run = out / _RUNS[0]
    (run / "result.json").write_text(json.dumps({"status": "interrupted"}))  # unfinished: compare redoes it
    child = _hold_lock(run)  # e.g. `medtl train --resume` continuing it
    before = _tree(out)
    try:
        with pytest.raises(RunLockedError, match=f"in use by process {child.pid}"):
            compare(cfg, out_dir=out)
        assert _tree(out) == before
    finally:
        _stop(child)


# ------------------------------------------------------------------------------------------------ W4


def test_flipped_labels_are_not_reused(finished: tuple[Path, Path]) -> None:
    cfg, out = finished
    manifest = cfg.parent / "data" / "manifest.csv"
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    flip = {"negative": "positive", "positive": "negative"}
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": flip[r["label"]]} for r in rows)
    before = _tree(out)
    events: list[str] = []
    with pytest.raises(MedtlError, match="manifest content"):
        compare(cfg, out_dir=out, on_event=events.append)
    assert not any("reusing" in e for e in events)
    assert _tree(out) == before


# ------------------------------------------------------------------------------------------------ W5


def test_a_changed_test_fraction_is_refused_and_replace_makes_new_splits(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, out = finished
    old_test = _test_patients(out / "splits.csv")
    changed = cfg.parent / "compare-more-test.yaml"
    changed.write_text(_CONFIG.replace("test_fraction: 0.25", "test_fraction: 0.5"))
    before = _tree(out)
    assert main(["compare", str(changed), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "splits.test_fraction: 0.25 -> 0.5" in err
    assert _tree(out) == before

    assert main(["compare", str(changed), "--out", str(out), "--replace"]) == 0
    new_test = _test_patients(out / "splits.csv")
    assert len(new_test) == 8 and len(old_test) == 4
    (old,) = (out / "superseded").iterdir()
    assert _test_patients(old / "splits.csv") == old_test
    recorded = json.loads((out / "splits.json").read_text())
    assert recorded["test_fraction"] == 0.5
    for run in _RUNS:  # the new runs were tested on the new test patients
        with open(out / run / "predictions_test.csv", newline="") as fh:
            tested = {r["patient_id"] for r in csv.DictReader(fh)}
        assert tested == new_test


def test_a_folder_made_by_an_older_medtl_is_refused_not_retrained(finished: tuple[Path, Path]) -> None:
    cfg, out = finished
    # what the previous code left: no splits.json, and a bare key per run in compare_key.txt
    (out / "splits.json").unlink(missing_ok=True)
    for run in _RUNS:
        (out / run / "compare_key.json").unlink(missing_ok=True)
        (out / run / "compare_key.txt").write_text("0123456789abcdef\n")
    before = _tree(out)
    with pytest.raises(MedtlError, match="made by an older medtl") as info:
        compare(cfg, out_dir=out)
    assert "\n" not in str(info.value) and "--replace" in str(info.value)
    assert _tree(out) == before


# ------------------------------------------------------------------------------------------------ reuse


def test_an_unchanged_comparison_reuses_every_run(finished: tuple[Path, Path]) -> None:
    cfg, out = finished
    runs = {run: _tree(out / run) for run in _RUNS}
    events: list[str] = []
    compare(cfg, out_dir=out, on_event=events.append)
    assert sum("finished earlier, reusing" in e for e in events) == 2
    assert not any(e.endswith(": training") for e in events)
    assert {run: _tree(out / run) for run in _RUNS} == runs
    assert not (out / "superseded").exists()


def test_another_cache_for_the_preprocessed_scans_reuses_every_run(finished: tuple[Path, Path]) -> None:
    """train.cache says where preprocessed scans are kept, not what a run learns: the runs are reused."""
    cfg, out = finished
    events: list[str] = []
    compare(cfg, out_dir=out, on_event=events.append, overrides={"train.cache": "disk"})
    assert sum("finished earlier, reusing" in e for e in events) == 2
    assert not (out / "superseded").exists()


# ------------------------------------------------------------------------------------------------ W10


def _two_seed_results() -> CompareResults:
    """2 arms x 2 seeds on 40 test patients, the arms swapping places between the seeds (a large seed SD)."""
    rng = np.random.default_rng(3)
    pids = [f"{i:04x}" for i in range(40)]
    y = np.arange(40) % 2
    arms = [
        Arm("imagenet", "resnet18", "imagenet", "fine_tune", "2d"),
        Arm("scratch", "resnet18", "scratch", "one_cycle", "2d"),
    ]
    strength = {("imagenet", 0): 3.0, ("imagenet", 1): 0.2, ("scratch", 0): 0.2, ("scratch", 1): 2.0}
    runs = []
    for arm in arms:
        for seed in (0, 1):
            w = strength[(arm.name, seed)]
            preds = aggregate_by_patient(pids, y, 1 / (1 + np.exp(-(w * (2 * y - 1) + rng.normal(0, 1, 40)))))
            metrics = {m: compute_metric(m, preds.labels, preds.probs) for m in METRICS}
            runs.append(
                RunRecord(arm.name, seed, 1.0, "ok", None, f"/runs/{arm.name}-{seed}", 6.0, 1, 20, metrics, preds)
            )
    return CompareResults(arms, runs, ["negative", "positive"], [0, 1], [1.0])


def test_the_power_note_with_two_seeds_is_sane(tmp_path: Path) -> None:
    results = _two_seed_results()
    summary = summarize(results, n_resamples=300)
    d = summary.row("imagenet", 1.0).vs_reference
    assert d.n_seeds == 2 and d.estimable and (d.high - d.low) / 2 > 1  # the interval itself: t(~1 df) * se
    write_report(results, tmp_path, summary=summary, plots=False)
    md = (tmp_path / "report.md").read_text()
    (note,) = [line for line in md.splitlines() if line.startswith("Power:")]
    assert note.startswith("Power: with 40 test patients and 2 seeds per arm, the paired 95% intervals cannot be")
    assert "cannot be estimated usefully with 2 seeds" in note and "1 degree of freedom" in note
    assert "At least 3 seeds per arm are needed for a verdict" in note
    # no half-width is printed as if it measured what the comparison can resolve
    assert "wide (median half-width)" not in note and not re.search(r"±\d", note)


# ------------------------------------------------------------------- two real compares on one folder at once


def _compare_in_child(config: str, out: str, started: Any, done: Any) -> None:
    from medtl.comparison.compare import compare as run_compare

    def say(msg: str) -> None:
        if "training" in msg:
            started.set()  # the folder's lock is held from before the first run starts training

    res = run_compare(config, out_dir=out, on_event=say, overrides={"train.epochs": 2})
    done.put([r.status for r in res.results.runs])


@pytest.mark.slow
def test_two_compares_on_one_folder_at_once_the_second_is_refused_and_nothing_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two real ``compare`` processes on one new folder: the one that holds the folder trains every run; the other is
    refused in one line (CLI, exit non-zero) while the first is training, and leaves no file behind."""
    write_manifest(tmp_path / "data", n_patients=16, size=16)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(_CONFIG)
    out = tmp_path / "cmp"
    ctx = multiprocessing.get_context("spawn")
    started, done = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_compare_in_child, args=(str(cfg), str(out), started, done))
    child.start()
    try:
        assert started.wait(240), "the first compare did not start training"
        before = _tree(out)
        code = main(["compare", str(cfg), "--out", str(out), "--epochs", "2"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and "in use by process" in err[0] and str(child.pid) in err[0], err
        assert "Traceback" not in "\n".join(err)
        statuses = done.get(timeout=600)
    finally:
        child.join(60)
        if child.is_alive():
            _stop(child)
    assert statuses == ["ok", "ok"]
    after = _tree(out)
    # the first held the folder while the second was refused; what it had written then is all still there
    assert ".lock" in before
    assert set(before) - {".lock"} <= set(after)
    for run in _RUNS:
        assert RunDir(out / run).status == "ok"
    assert not (out / ".lock").exists()
